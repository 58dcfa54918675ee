"""The asyncio answer: ``AsyncOpenAI``, one task per section, all feeding one ``asyncio.Queue``.

This is how the fan-out is usually written when the framework is async: each task streams its
section's typed chunks into the queue and always posts its end (done or the exception) so the
consumer can count sections down; one failing section does not stop the others. The client is
``AsyncOpenAI`` on its default transport (HTTP/1.1 pool). The event loop is kept for the peer's
lifetime, so loop start-up is not counted per run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import openai

from peers.base import API_KEY, Peer, Section, Trace

__all__ = ["AsyncioFanout", "fan_out"]

_DONE = object()


async def fan_out(client: openai.AsyncOpenAI, sections: Sequence[Section], trace: Trace) -> None:
    """Stream every section at once; record chunks on the consumer side of the queue."""
    queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

    async def one(section: Section) -> None:
        end: object = _DONE
        try:
            stream = await client.chat.completions.create(
                model=section.model,
                messages=section.messages(),  # type: ignore[arg-type]
                max_tokens=section.max_tokens,
                stream=True,
                extra_body={"sim": dict(section.sim)},
            )
            async with stream:
                async for chunk in stream:
                    for choice in chunk.choices:
                        content = choice.delta.content
                        if content:
                            queue.put_nowait((section.name, content))
        except Exception as exc:
            end = exc
        finally:
            queue.put_nowait((section.name, end))

    for section in sections:
        trace.section_started(section.name)
    tasks = [asyncio.create_task(one(section)) for section in sections]
    remaining = len(tasks)
    chunk_seen = trace.chunk
    try:
        while remaining:
            name, item = await queue.get()
            if type(item) is str:
                chunk_seen(name, item)
            elif item is _DONE:
                remaining -= 1
                trace.section_ended(name)
            else:
                remaining -= 1
                trace.section_ended(name, error=f"{type(item).__name__}: {item}")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class AsyncioFanout(Peer):
    name = "asyncio"
    label = "asyncio fan-out (AsyncOpenAI, one task per section, asyncio.Queue)"

    def __init__(self, base_url: str, api_key: str = API_KEY) -> None:
        super().__init__(base_url, api_key)
        self.loop = asyncio.new_event_loop()
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)

    def run(self, prepared: Sequence[Section], trace: Trace) -> None:
        self.loop.run_until_complete(fan_out(self.client, prepared, trace))

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.run_until_complete(self.client.close())
        self.loop.close()
