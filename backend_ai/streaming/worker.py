"""One section's worker: stream one chat completion and post its events to the run's channel.

A worker runs on a pool thread and sends the request through the SDK (base URL, auth, typed
errors for non-2xx answers). Then one of two paths reads the body:

* **the fast path** — the response came over our own HTTP/2 transport: the section is handed
  to its connection's reader thread (``_SectionSink``), which parses the SSE lines as they
  arrive and posts the chunks straight into the run's channel. The pool thread is free again,
  and a chunk wakes one thread only: the run's consumer. The reader never waits on a full
  channel (it serves every stream of its connection); it keeps the chunks and stops returning
  that stream's flow-control window, so the upstream pauses instead;
* **the plain path** — any other response (HTTP/1.1, a client that is not ours): the pool
  thread iterates the body itself and waits on a full channel.

Both parse with the same reader (``parsers.reader_for``) and end the same way: exactly one
end item — ``SectionDone``, ``SectionError`` or ``RateLimited`` — so the consumer can count
producers down and never waits for a section that died. Everything opened upstream is
registered in the section's ``CancelScope``, so the consumer can cancel it from its own thread
at any moment.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import httpx2
import openai

from backend_ai.streaming.channel import RunChannel
from backend_ai.streaming.config import RunOptions, StreamConfig
from backend_ai.streaming.events import (
    ContentChunk,
    ErrorCode,
    SectionDone,
    SectionError,
    SectionStarted,
)
from backend_ai.streaming.http2 import Http2Stream
from backend_ai.streaming.parsers import (
    SectionCancelled,
    SectionReader,
    add_chat_reasoning,
    reader_for,
    responses_body,
)
from backend_ai.streaming.rate_limit import retry_wait_s
from backend_ai.streaming.section_state import SectionState
from backend_ai.streaming.transport import UPSTREAM_STREAM, shutdown_response
from backend_ai.streaming.upstream import (
    redacted_traceback,
    safe_message,
    translate_exception,
)

__all__ = ["RateLimited", "run_section"]

logger = logging.getLogger(__name__)

_CANCEL_MESSAGES: Mapping[ErrorCode, str] = {
    ErrorCode.CANCELLED: "the run was cancelled",
    ErrorCode.TIMEOUT: "the section timed out",
    ErrorCode.SLOW_CONSUMER: "the consumer stopped reading",
}


@dataclass(frozen=True, slots=True)
class RateLimited:
    """End item of an attempt that got HTTP 429: the consumer decides when to try again."""

    section: str
    wait_s: float
    message: str


def _request_body(config: StreamConfig, options: RunOptions) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": config.model,
        "messages": config.messages(),
        "temperature": config.temperature,
        "max_tokens": config.max_tokens,
        "stream": True,
    }
    if options.include_usage:
        body["stream_options"] = {"include_usage": True}
    if config.extra_body:
        body.update(config.extra_body)
    return body


def _request(config: StreamConfig, options: RunOptions) -> tuple[str, dict[str, Any]]:
    """The path and body of a section's request, for the API it uses (``parsers``)."""
    if config.api == "responses":
        return "/responses", responses_body(config)
    body = _request_body(config, options)
    if config.reasoning_effort is not None:
        add_chat_reasoning(body, config)
    return "/chat/completions", body


def _open_stream(
    client: openai.OpenAI, body: dict[str, Any], path: str = "/chat/completions"
) -> httpx2.Response:
    """Send the chat-completion request and return its unread streaming response.

    Through the SDK's generic ``post`` — its base URL, auth, headers, timeouts and typed errors
    for non-2xx answers — but without the resource method's walk of the parameters against
    their TypedDicts, which is a third of the SDK's cost per request: a run's sections build
    their requests at the same moment under one GIL, so that cost delays every first token.
    """
    response_type = cast(Any, httpx2.Response)
    return cast(
        httpx2.Response,
        client.post(path, cast_to=response_type, body=body, stream=True),
    )


class _SectionSink:
    """The fast path: one section fed by its HTTP/2 connection's reader thread.

    ``on_data`` parses each DATA frame into ``_pending``; ``on_read_end`` posts what a whole
    network read brought as one batch, right before the reader waits on the socket again, so
    the consumer it wakes does not then wait for the reader to let go of the interpreter. It
    never waits itself: when the channel is full the chunks are held here and the stream's
    window is not returned, so the upstream stops after at most one window; the consumer's
    next ``get`` calls ``_on_room``. Held longer than the backpressure timeout:
    ``slow_consumer``. Calls come from the reader, the consumer (``_on_room``, a cancel) and
    the pool's housekeeper (``check``), serialised by one re-entrant lock.
    """

    def __init__(
        self,
        reader: SectionReader,
        state: SectionState,
        channel: RunChannel,
        options: RunOptions,
        secrets: tuple[str, ...],
        response: httpx2.Response,
    ) -> None:
        self._lock = threading.RLock()
        self._reader = reader
        self._state = state
        self._channel = channel
        self._options = options
        self._secrets = secrets
        self._response: httpx2.Response | None = response
        #: Both are let go when the section ends: the stream refers to this sink, so keeping
        #: them would leave a reference cycle for the garbage collector's slow full pass.
        self._stream: Http2Stream | None = None
        self._pending: list[ContentChunk] = []
        self._pending_bytes = 0
        self._held: list[ContentChunk] = []
        self._held_bytes = 0
        self._held_since = 0.0
        self._finished = False

    def on_data(self, data: bytes, stream: Http2Stream) -> None:
        with self._lock:
            if self._finished:
                return
            self._stream = stream
            batch = self._held or self._pending
            try:
                self._reader.read(data, batch)
            except BaseException as exc:
                self._finish(exc, stop_upstream=True)
                return
            if self._held:
                self._held_bytes += len(data)
            else:
                self._pending_bytes += len(data)

    def on_read_end(self) -> None:
        with self._lock:
            if self._finished:
                return
            now = time.monotonic()
            self._state.last_activity = now
            batch, size = self._pending, self._pending_bytes
            self._pending, self._pending_bytes = [], 0
            if batch and self._state.cancel_code is None:
                if self._channel.offer_chunks(batch, self._on_room):
                    self._reader.accepted(batch, now)
                else:
                    self._held, self._held_bytes, self._held_since = batch, size, now
                    return
            if size and self._stream is not None:
                self._stream.release(size)

    def _on_room(self) -> None:
        with self._lock:
            held = self._held
            if not held or self._finished or self._state.cancel_code is not None:
                return
            if not self._channel.offer_chunks(held, self._on_room):
                return
            self._held = []
            self._reader.accepted(held, time.monotonic())
            size, self._held_bytes = self._held_bytes, 0
            if self._stream is not None:
                self._stream.release(size)

    def on_end(self) -> None:
        with self._lock:
            if not self._finished:
                self._finish(None)

    def on_error(self, error: BaseException) -> None:
        with self._lock:
            if not self._finished:
                self._finish(error)

    def check(self, now: float) -> bool:
        """True while chunks are held for the consumer (the upstream is quiet because of us)."""
        with self._lock:
            if not self._held or self._finished:
                return False
            self._state.last_activity = now  # waiting on the consumer is not an upstream stall
            give_up = now - self._held_since >= self._channel.backpressure_timeout_s
        if give_up:
            # Outside the lock: the cancel resets the stream, which takes the stream's lock.
            self._state.cancel(ErrorCode.SLOW_CONSUMER)
        return True

    def _finish(self, error: BaseException | None, *, stop_upstream: bool = False) -> None:
        """Post the end item (after the chunks received before it, unless the section was
        stopped)."""
        self._finished = True
        state, reader = self._state, self._reader
        rest = self._held + self._pending
        self._held, self._pending = [], []
        if rest and state.cancel_code is None:
            # Already received and bounded by the stream window: they go out before the end.
            self._channel.force_chunks(rest)
            reader.accepted(rest, time.monotonic())
        end: object
        if error is None:
            end = _end_of_stream(reader, reader.started)
        else:
            end = _end_for_failure(error, state, reader.seq, self._options, self._secrets)
        state.chunks = reader.seq
        self._channel.put_control(end)
        state.scope.close()
        response, self._response, self._stream = self._response, None, None
        if response is not None and (stop_upstream or error is not None):
            response.close()


def run_section(
    client: openai.OpenAI,
    state: SectionState,
    channel: RunChannel,
    options: RunOptions,
    secrets: tuple[str, ...],
) -> None:
    """Stream one section to its end; never raises."""
    config = state.config
    scope = state.scope
    started = time.monotonic()
    state.last_activity = started
    reader: SectionReader = reader_for(config, state.chunks, started)
    end: object = None
    try:
        if scope.cancelled:
            raise SectionCancelled
        if not state.announced:
            state.announced = True
            channel.put_control(SectionStarted(section=config.section_name, model=config.model))
        with scope:
            path, body = _request(config, options)
            response = _open_stream(client, body, path)
            upstream = response.extensions.get(UPSTREAM_STREAM)
            if isinstance(upstream, Http2Stream):
                # The fast path: the sink posts the chunks and the end item from now on.
                scope.hand_off()
                upstream.attach_sink(
                    _SectionSink(reader, state, channel, options, secrets, response)
                )
                return
            try:
                scope.attach_fallback(functools.partial(shutdown_response, response))
                try:
                    for received in response.iter_bytes():
                        batch: list[ContentChunk] = []
                        try:
                            reader.read(received, batch)
                        finally:
                            reader.deliver(batch, state, channel)
                finally:
                    # Read to the end, or failing: the response is closed next, and a late
                    # cancel must not touch a connection that may go back to the pool.
                    scope.close()
            finally:
                response.close()
        end = _end_of_stream(reader, started)
    except BaseException as exc:
        end = _end_for_failure(exc, state, reader.seq, options, secrets)
    finally:
        if end is not None:
            state.chunks = reader.seq
            channel.put_control(end)


def _end_of_stream(reader: SectionReader, started: float) -> SectionDone | SectionError:
    """A stream that ended cleanly without a ``finish_reason`` was cut off: not a success."""
    if reader.finish_reason is None:
        return SectionError(
            section=reader.section,
            code=ErrorCode.INCOMPLETE,
            message="the upstream ended the stream without a finish_reason",
            chunks=reader.seq,
        )
    return SectionDone(
        section=reader.section,
        finish_reason=reader.finish_reason,
        ttft_ms=None if reader.ttft_ms is None else round(reader.ttft_ms, 3),
        duration_ms=round((time.monotonic() - started) * 1000, 3),
        chars=reader.chars,
        chunks=reader.seq,
        usage=reader.usage,
    )


def _end_for_failure(
    exc: BaseException,
    state: SectionState,
    seq: int,
    options: RunOptions,
    secrets: tuple[str, ...],
) -> object:
    section = state.name
    if state.cancel_code is not None:
        code = state.cancel_code
        message = state.cancel_message or _CANCEL_MESSAGES.get(code, "the section was stopped")
        return SectionError(section=section, code=code, message=message, chunks=seq)
    if isinstance(exc, openai.RateLimitError) and seq == 0:
        wait = retry_wait_s(dict(exc.response.headers), cap_s=options.max_retry_wait_s)
        return RateLimited(section=section, wait_s=wait, message=safe_message(str(exc), secrets))
    code, message = translate_exception(exc, secrets)
    if code is ErrorCode.INTERNAL:
        # The type only at ERROR; the traceback, redacted, at DEBUG (it may quote a secret).
        logger.error("section %r failed: %s", section, type(exc).__name__)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("section %r: %s", section, redacted_traceback(exc, secrets))
    else:
        logger.info("section %r ended with %s: %s", section, code.value, message)
    return SectionError(section=section, code=code, message=message, chunks=seq)
