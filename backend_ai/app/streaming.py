"""Turning one engine run into a Flask SSE response, with metrics and history on the side.

The response body is a generator over the run's events. Three things end it:

* the run's final ``done`` event (the normal end);
* the client going away — the WSGI server then calls ``close()`` on the body, which closes the
  engine's generator, which cancels every upstream stream of the run;
* a graceful shutdown — ``ParallelStreamManager.close()`` winds the run down: open sections
  end with a ``cancelled`` error and the run still sends its final ``done`` (``cancelled:
  true``), so a client can tell a finished stream from a cut connection.

The body adds no event of its own to the run: the engine ends every section and sends
``done`` last, and ``RunRecorder`` only records what the engine said. Should the engine's
generator raise (a bug), the error is logged and the body ends there, without a ``done``:
clients read that as a cut connection, which it is, rather than a run the engine never
finished dressed up as one that did.

The engine's ``start`` event is taken *before* the response is built (``open_run``): the engine
yields it before any upstream call, so this costs nothing, and any error the engine raises up
front becomes a JSON error instead of a stream that starts and then fails. Side work (metrics,
the history record) happens after each event has been handed to the server, and saving the
reading is a non-blocking put onto the history writer's queue.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backend_ai.app.extension import ServiceState
from backend_ai.app.history import HistoryRecord, SavedSection
from backend_ai.app.request_threads import STREAM_SLOTS
from backend_ai.streaming import StreamConfig
from backend_ai.streaming.events import (
    ContentChunk,
    Event,
    RateLimitFallback,
    RunDone,
    RunStarted,
    SectionDone,
    SectionError,
)
from backend_ai.streaming.sse import encode_event

if TYPE_CHECKING:
    from flask import Response

__all__ = [
    "SSE_HEADERS",
    "OpenedRun",
    "RunRecorder",
    "open_run",
    "reading_frame",
    "sse_body",
    "sse_response",
]

logger = logging.getLogger(__name__)

SSE_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    # nginx and some other proxies buffer responses unless told not to.
    "X-Accel-Buffering": "no",
}


@dataclass
class _Section:
    model: str
    parts: list[str] = field(default_factory=list)
    #: The engine's end event for this section; None while it runs, or if the run was cut.
    end: SectionDone | SectionError | None = None

    def saved(self) -> SavedSection:
        end = self.end
        if isinstance(end, SectionDone):
            status, ttft_ms, duration_ms = "done", end.ttft_ms, end.duration_ms
        else:
            status = "error" if end is not None else "incomplete"
            ttft_ms = duration_ms = None
        return SavedSection(
            text="".join(self.parts),
            status=status,
            model=self.model,
            ttft_ms=ttft_ms,
            duration_ms=duration_ms,
            error_code=str(end.code) if isinstance(end, SectionError) else None,
            error_message=end.message if isinstance(end, SectionError) else None,
        )


def _run_outcome(done: RunDone | None) -> str:
    """``ok``, ``partial``, ``failed`` or ``cancelled``, from the engine's final event (None:
    the stream stopped before it, so the run did not finish)."""
    if done is None or done.cancelled:
        return "cancelled"
    if not done.failed:
        return "ok"
    return "partial" if done.completed else "failed"


class RunRecorder:
    """Records a run's events as the engine sends them, to feed metrics and build the history
    record; the engine's ``done`` is the run's outcome."""

    def __init__(
        self,
        state: ServiceState,
        *,
        route: str,
        request_id: str,
        configs: Sequence[StreamConfig],
        input_data: Mapping[str, Any],
        received_at: float,
    ) -> None:
        self._state = state
        self._metrics = state.metrics
        self.route = route
        self.request_id = request_id
        self._input = dict(input_data)
        self._received_at = received_at
        self._created_at = time.time()
        self.sections = {c.section_name: _Section(model=c.model) for c in configs}
        self.done: RunDone | None = None
        self.rate_limited = False
        #: ``ok``, ``partial``, ``failed`` or ``cancelled`` once ``finish`` ran.
        self.outcome: str | None = None
        self.first_chunk_ms: float | None = None

    def section_count(self) -> int:
        return len(self.sections)

    def cut(self) -> bool:
        """The stream stopped before its final event: the server stopped writing it."""
        return self.done is None

    def observe(self, event: Event) -> None:
        if type(event) is ContentChunk:  # the hot path: most events are chunks
            self.sections[event.section].parts.append(event.content)
            if self.first_chunk_ms is None:
                self.first_chunk_ms = self.elapsed_ms()
            return
        if isinstance(event, SectionDone):
            self.sections[event.section].end = event
            self._metrics.sections.labels(self.route, "done").inc()
            self._metrics.chunks.labels(self.route).inc(event.chunks)
            if event.ttft_ms is not None:
                self._metrics.ttft.labels(self.route).observe(event.ttft_ms / 1000)
            self._metrics.section_duration.labels(self.route).observe(event.duration_ms / 1000)
        elif isinstance(event, SectionError):
            self.sections[event.section].end = event
            self._metrics.sections.labels(self.route, "error").inc()
            self._metrics.section_errors.labels(str(event.code)).inc()
            self._metrics.chunks.labels(self.route).inc(event.chunks)
        elif isinstance(event, RateLimitFallback):
            if not self.rate_limited:
                self.rate_limited = True
                self._metrics.rate_limit_fallbacks.labels(self.route).inc()
        elif isinstance(event, RunDone):
            self.done = event

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self._received_at) * 1000

    def finish(self) -> None:
        """Record the run's outcome and offer the reading to the history writer."""
        outcome = self.outcome = _run_outcome(self.done)
        self._metrics.runs.labels(self.route, outcome).inc()
        duration_ms = self.elapsed_ms()
        self._metrics.run_duration.labels(self.route).observe(duration_ms / 1000)
        history = self._state.history
        if history is None:
            return
        record = HistoryRecord(
            request_id=self.request_id,
            route=self.route,
            created_at=self._created_at,
            duration_ms=round(duration_ms, 3),
            cancelled=outcome == "cancelled",
            input=self._input,
            sections={name: section.saved() for name, section in self.sections.items()},
        )
        history.submit(record)


@dataclass
class OpenedRun:
    """A run whose ``start`` event has been taken, ready to become a response."""

    started: RunStarted
    #: The rest of the run, in lists of the events that were ready together.
    batches: Generator[list[Event], None, None]
    recorder: RunRecorder
    #: The app-level ``reading`` event's fields (what the server drew or cast for this
    #: reading), sent before the engine's frames; None sends none.
    reading: Mapping[str, Any] | None = None


def reading_frame(request_id: str, route: str, fields: Mapping[str, Any]) -> bytes:
    """The SSE frame of the app-level ``reading`` event (docs/PROTOCOL.md).

    Framed like the engine's events: one ``data:`` line of ASCII-only JSON, so no text in it
    can end the message early.
    """
    payload = {"type": "reading", "request_id": request_id, "route": route, **fields}
    return f"data: {json.dumps(payload, ensure_ascii=True, separators=(',', ':'))}\n\n".encode()


def open_run(
    state: ServiceState,
    *,
    route: str,
    request_id: str,
    configs: Sequence[StreamConfig],
    mode: str,
    input_data: Mapping[str, Any],
    received_at: float,
    reading: Mapping[str, Any] | None = None,
) -> OpenedRun:
    """Start the run and take its ``start`` event; errors here still become JSON errors."""
    batches = state.manager.stream_batches(
        list(configs), options=state.run_options(mode), request_id=request_id
    )
    try:
        (started,) = next(batches)
    except BaseException:
        batches.close()
        raise
    if not isinstance(started, RunStarted):  # the engine's contract: start comes first
        batches.close()
        raise RuntimeError(f"the run began with {type(started).__name__}, not RunStarted")
    recorder = RunRecorder(
        state,
        route=route,
        request_id=request_id,
        configs=configs,
        input_data=input_data,
        received_at=received_at,
    )
    recorder.observe(started)
    return OpenedRun(started=started, batches=batches, recorder=recorder, reading=reading)


def _frames(state: ServiceState, run: OpenedRun) -> Iterator[bytes]:
    recorder, events, metrics = run.recorder, run.batches, state.metrics
    metrics.active_streams.inc()
    if STREAM_SLOTS.opened():
        metrics.request_threads_full.inc()
    try:
        if run.reading is not None:
            yield reading_frame(recorder.request_id, recorder.route, run.reading)
        yield encode_event(run.started).encode()
        metrics.first_byte.labels(recorder.route).observe(recorder.elapsed_ms() / 1000)
        try:
            for batch in events:
                # The events that were ready together go out in one write.
                frames = []
                for event in batch:
                    recorder.observe(event)
                    frames.append(encode_event(event))
                yield "".join(frames).encode()
        except Exception as exc:  # a bug in the engine: the stream stops here, without done
            # Only the type: an exception's message may quote upstream text or a header.
            logger.error(
                "run %s of %s failed: %s", recorder.request_id, recorder.route, type(exc).__name__
            )
    finally:
        # Also reached when the client went away: the server closed this generator.
        events.close()
        metrics.active_streams.dec()
        STREAM_SLOTS.closed()
        try:
            recorder.finish()
        except Exception as exc:  # side work never breaks a stream
            logger.warning("recording run %s failed: %s", recorder.request_id, type(exc).__name__)


def sse_body(state: ServiceState, run: OpenedRun) -> Iterator[bytes]:
    """The SSE bytes of ``run``, for any WSGI framework's streaming response; closing the
    iterator (the server does when the client goes away) cancels the run."""
    return _frames(state, run)


def sse_response(state: ServiceState, run: OpenedRun) -> Response:
    """The ``text/event-stream`` response that streams ``run``."""
    from flask import Response

    response = Response(sse_body(state, run), mimetype="text/event-stream")
    response.headers.update(SSE_HEADERS)
    response.headers["X-Request-Id"] = run.recorder.request_id
    return response
