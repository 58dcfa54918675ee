"""One stream after another: the plain loop, and the single-stream CPU references.

``SequentialLoop()`` is the baseline the engine is measured against: the SDK's default client
and its typed ``ChatCompletionChunk`` stream, section by section. A section that fails is
reported and the loop goes on to the next one (the most forgiving plain loop; a bare loop would
stop).

The two references stream over the engine's pooled HTTP/2 client so that only the parsing
differs from the engine: ``typed`` iterates ``ChatCompletionChunk`` objects, ``raw`` reads
``with_streaming_response`` lines and ``json.loads`` each one — what the engine does itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx
import openai

from peers.base import API_KEY, Peer, Section, Trace

__all__ = ["SequentialLoop", "pooled_http_client"]


def pooled_http_client(*, http2: bool = True) -> httpx.Client:
    """The engine's pooled client (HTTP/2 prior knowledge on cleartext, or HTTP/1.1)."""
    from backend_ai.streaming import PoolSettings, build_http_client

    return build_http_client(PoolSettings(http2=http2, http2_prior_knowledge=http2))


class SequentialLoop(Peer):
    name = "sequential"
    label = "sequential loop (openai SDK, typed chunks)"

    def __init__(
        self,
        base_url: str,
        api_key: str = API_KEY,
        *,
        raw: bool = False,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key)
        self.raw = raw
        self._own_http = None
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, http_client=http_client
        )

    @classmethod
    def reference(cls, base_url: str, *, raw: bool, api_key: str = API_KEY) -> SequentialLoop:
        """A single-stream reference over the engine's pooled HTTP/2 client."""
        http = pooled_http_client()
        peer = cls(base_url, api_key, raw=raw, http_client=http)
        peer._own_http = http
        peer.name = "sdk_raw" if raw else "sdk_typed"
        peer.label = (
            "SDK raw lines + json.loads (pooled HTTP/2)"
            if raw
            else "SDK typed ChatCompletionChunk (pooled HTTP/2)"
        )
        return peer

    def _arguments(self, section: Section) -> dict[str, Any]:
        return {
            "model": section.model,
            "messages": section.messages(),
            "max_tokens": section.max_tokens,
            "stream": True,
            "extra_body": {"sim": dict(section.sim)},
        }

    def run(self, prepared: Sequence[Section], trace: Trace) -> None:
        stream_one = self._stream_raw if self.raw else self._stream_typed
        for section in prepared:
            trace.section_started(section.name)
            try:
                stream_one(section, trace)
            except openai.APIError as exc:
                trace.section_ended(section.name, error=f"{type(exc).__name__}: {exc}")
            else:
                trace.section_ended(section.name)

    def _stream_typed(self, section: Section, trace: Trace) -> None:
        name = section.name
        chunk_seen = trace.chunk
        stream = self.client.chat.completions.create(**self._arguments(section))
        with stream:
            for chunk in stream:
                for choice in chunk.choices:
                    content = choice.delta.content
                    if content:
                        chunk_seen(name, content)

    def _stream_raw(self, section: Section, trace: Trace) -> None:
        name = section.name
        chunk_seen = trace.chunk
        loads = json.loads
        create = self.client.chat.completions.with_streaming_response.create
        with create(**self._arguments(section)) as response:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                payload = loads(line[6:])
                for choice in payload.get("choices") or ():
                    delta = choice.get("delta")
                    content = delta.get("content") if delta else None
                    if content:
                        chunk_seen(name, content)

    def close(self) -> None:
        self.client.close()
        if self._own_http is not None:
            self._own_http.close()
