"""backend_ai's engine as a peer: ``ParallelStreamManager`` over the pooled HTTP/2 client.

``sse=False`` consumes the event objects; ``sse=True`` consumes the ready SSE frames that a
Flask response writes (``stream_sse``), so the encoding is part of what is measured. In SSE
mode chunks are recognised by their frame prefix and counted against a placeholder section
(the frames are not parsed back: a server would not parse them either).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import openai

from backend_ai.streaming import ParallelStreamManager, PoolSettings, RunOptions, build_http_client
from backend_ai.streaming.config import Mode
from backend_ai.streaming.events import ContentChunk, SectionDone, SectionError, SectionStarted
from peers.base import API_KEY, Peer, Section, SectionTrace, Trace, section_configs

__all__ = ["SSE_SECTION", "EnginePeer"]

#: The trace section SSE-mode chunks are counted under.
SSE_SECTION = "*"
_CHUNK_FRAME = 'data: {"type":"chunk"'


class EnginePeer(Peer):
    name = "engine"
    label = "backend_ai ParallelStreamManager (pooled HTTP/2)"

    def __init__(
        self,
        base_url: str,
        api_key: str = API_KEY,
        *,
        mode: Mode | str = Mode.INTERLEAVED,
        http2: bool = True,
        sse: bool = False,
        options: RunOptions | None = None,
    ) -> None:
        super().__init__(base_url, api_key)
        self.http = build_http_client(PoolSettings(http2=http2, http2_prior_knowledge=http2))
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, http_client=self.http)
        self.options = options or RunOptions(mode=Mode(mode), heartbeat_s=None)
        self.manager = ParallelStreamManager(self.client, options=self.options)
        self.sse = sse
        if sse:
            self.name = "engine_sse"
        if not http2:
            self.name += "_http1"

    def prepare(self, sections: Sequence[Section]) -> Any:
        return section_configs(sections)

    def run(self, prepared: Any, trace: Trace) -> None:
        if self.sse:
            self._run_sse(prepared, trace)
            return
        events = self.manager.stream(prepared)
        chunk_seen = trace.chunk
        try:
            for event in events:
                if type(event) is ContentChunk:
                    chunk_seen(event.section, event.content)
                    continue
                trace.event()
                if type(event) is SectionStarted:
                    trace.section_started(event.section)
                elif type(event) is SectionDone:
                    trace.section_ended(event.section)
                elif type(event) is SectionError:
                    trace.section_ended(event.section, error=f"{event.code}: {event.message}")
        finally:
            events.close()

    def _run_sse(self, prepared: Any, trace: Trace) -> None:
        frames = self.manager.stream_sse(prepared)
        chunk_seen = trace.chunk
        trace.sections.setdefault(SSE_SECTION, SectionTrace())
        for text in frames:
            # One write carries the frames of every event that was ready together.
            for frame in text.split("\n\n") if text.count("\n\n") > 1 else (text,):
                if frame.startswith(_CHUNK_FRAME):
                    chunk_seen(SSE_SECTION, frame)
                elif frame:
                    trace.event()

    def open_stream(self, sections: Sequence[Section]) -> Any:
        """The raw event generator of one run (cancellation measurements close it)."""
        return self.manager.stream(self.prepare(sections))

    def open_live(self, sections: Sequence[Section]) -> Any:
        """A run read until every section has sent a chunk, so that every upstream stream is
        open and streaming; the caller closes the generator (what cancellation measures)."""
        events = self.open_stream(sections)
        seen: set[str] = set()
        for event in events:
            if type(event) is ContentChunk:
                seen.add(event.section)
                if len(seen) == len(sections):
                    break
        return events

    def close(self) -> None:
        self.manager.close()
        self.client.close()
        self.http.close()
