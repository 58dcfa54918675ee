"""One HTTP/2 connection to an upstream: a reader thread, serialised writes, streams fed by it.

The model is the one Go's ``net/http`` and Rust's ``h2`` clients use. Following a chunk:

1. The connection's **reader thread** is the only one that reads the socket. It hands each
   read to the ``h2`` state machine (under ``_state_lock``, held for that call only) and
   dispatches the events it returns, outside that lock, to their streams.
2. A stream keeps what arrived in its own buffer and wakes the one thread waiting on it (the
   plain path: ``Http2Stream.read``), or passes it at once to a ``StreamSink`` that the reader
   runs itself (the fast path: the engine parses SSE lines on the reader and posts chunks
   straight to a run's channel, so a chunk wakes one thread, the run's consumer).
3. Flow-control window goes back to the server as data is consumed: at once for the
   connection (a stalled stream must not stall its neighbours), per stream only when its
   consumer took the data — that is how a slow consumer pushes back on the upstream.

Writes (headers, data, window updates, resets, pings) are queued in ``h2`` under the state
lock and sent by whichever thread holds ``_send_lock``; a thread that finds it taken leaves
its frames to the holder, so neither the reader nor a cancel ever waits on a blocked write.
A cancel therefore sends ``RST_STREAM`` from the cancelling thread at once.

Any exception from ``h2.receive_data`` ends the whole connection: ``h2`` drops the events it
had parsed from that read, so a stream could otherwise miss data and still end cleanly. Every
stream on a failed connection ends with an error, never with a truncated success.

``h2`` closes its state machine on any ``GOAWAY``, which would fail the streams a graceful
``GOAWAY`` (``NO_ERROR``) promises to finish (RFC 9113 §6.8). So GOAWAY frames are taken out
of the byte stream before ``h2`` sees it (``_GoawayFilter``) and handled here: streams at or
below ``last_stream_id`` go on, those above it were never processed and may be retried.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httpx2

from backend_ai.streaming.sockets import ConnectedSocket

__all__ = [
    "ConnectionLimits",
    "Http2Connection",
    "Http2Stream",
    "RequestCancelled",
    "StreamRefused",
    "StreamSink",
]

logger = logging.getLogger(__name__)

_RECV_SIZE = 65536
#: Receive window of each stream: enough for full speed, small enough that a stalled consumer
#: pushes back on the upstream before much piles up in memory.
STREAM_WINDOW = 1024 * 1024
#: Receive window of the whole connection: many streams at full window.
CONNECTION_WINDOW = 16 * 1024 * 1024
#: Window is returned in steps of this much (below the 65,535 bytes a stream starts with).
_STREAM_WINDOW_STEP = 32 * 1024
_CONNECTION_WINDOW_STEP = 1024 * 1024
#: A response whose header section is larger fails alone (its stream is reset) ...
MAX_RESPONSE_HEADERS = 64 * 1024
#: ... and one beyond what the HPACK decoder accepts at all ends the connection: its header
#: compression state can no longer be trusted.
_MAX_HEADER_LIST_SIZE = 1024 * 1024
_GOAWAY = 0x7
#: A stream given up on after this long without data, on a connection that delivered nothing
#: to any stream for as long, retires the connection (see ``_stream_abandoned``).
_QUIET_RETIRE_S = 1.0
_FRAME_HEADER = 9


class StreamRefused(httpx2.TransportError):
    """The server did not process this request (REFUSED_STREAM, or above a GOAWAY's last
    stream id): it may be sent again on another connection."""


class RequestCancelled(httpx2.TransportError):
    """The request was cancelled from another thread."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Timers of one connection (from the pool's settings)."""

    ping_interval_s: float
    ping_timeout_s: float
    write_timeout_s: float


class StreamSink(Protocol):
    """Takes a stream's data on the reader thread instead of a waiting consumer.

    Each method runs on whichever thread delivers the news (the reader, a cancelling thread,
    the pool's housekeeper), under the stream's lock except ``check``; none may block.
    """

    def on_data(self, data: bytes, stream: Http2Stream) -> None:
        """``data`` arrived; call ``stream.release(len(data))`` once it is consumed."""

    def on_read_end(self) -> None:
        """The network read that brought data to this sink is processed: the moment to hand
        on what it parsed (once per read, just before the reader waits for the next one)."""

    def on_end(self) -> None:
        """The response ended cleanly."""

    def on_error(self, error: BaseException) -> None:
        """The stream failed (reset, connection error, timeout, cancel)."""

    def check(self, now: float) -> bool:
        """Periodic check from the pool's housekeeper (backpressure deadlines); True while the
        sink holds data back, so the upstream's silence is not a read timeout."""


class Http2Stream:
    """One request/response exchange on an ``Http2Connection``."""

    def __init__(self, connection: Http2Connection, stream_id: int) -> None:
        self.connection = connection
        self.stream_id = stream_id
        # Re-entrant: a sink called under it may close its own stream.
        self._cond = threading.Condition(threading.RLock())
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] | None = None
        self._chunks: deque[bytes] = deque()
        self._ended = False
        self._error: BaseException | None = None
        self._sink: StreamSink | None = None
        self._unreleased = 0
        #: The response's headers were handed to a caller: from then on it cannot be retried.
        self.delivered = False
        #: The whole request is queued or sent, the frame that ends the stream included.
        self.request_sent = False
        self.last_data_at = time.monotonic()
        self.read_timeout_s: float | None = None

    # -- inbound, from the reader thread -------------------------------------------------

    def _on_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        with self._cond:
            self.status = status
            self.headers = headers
            self._cond.notify_all()

    def _on_data(self, data: bytes) -> None:
        self.last_data_at = self.connection.last_received_at
        with self._cond:
            if self._error is not None:
                return
            sink = self._sink
            if sink is None:
                self._chunks.append(data)
                self._cond.notify()
                return
            sink.on_data(data, self)
        self.connection._sinks_fed.append(sink)

    def _on_end(self) -> None:
        with self._cond:
            if self._error is not None or self._ended:
                return
            self._ended = True
            self._cond.notify_all()
            if self._sink is not None:
                self._sink.on_end()

    def _fail(self, error: BaseException) -> None:
        """End the stream with ``error`` unless it already ended or failed."""
        with self._cond:
            if self._error is not None or self._ended:
                return
            self._error = error
            if isinstance(error, RequestCancelled):
                self._chunks.clear()
            self._cond.notify_all()
            if self._sink is not None:
                self._sink.on_error(error)

    @property
    def finished(self) -> bool:
        return self._ended or self._error is not None

    # -- the consumer's side ------------------------------------------------------------

    def wait_headers(self, timeout_s: float | None) -> None:
        """Wait for the response headers; raise the stream's error or ``httpx2.ReadTimeout``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self.headers is None:
                if self._error is not None:
                    raise self._error
                if self._ended:
                    raise httpx2.RemoteProtocolError("the upstream ended a stream without headers")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self.connection._stream_abandoned(self)
                    raise httpx2.ReadTimeout("the upstream did not answer in time")
                self._cond.wait(remaining)
            self.delivered = True

    def read(self, timeout_s: float | None) -> bytes:
        """Everything received and not yet read (b"" at the end); the data first, then any
        error; ``httpx2.ReadTimeout`` when nothing arrives for ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._chunks:
                if self._error is not None:
                    raise self._error
                if self._ended:
                    return b""
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self.connection._stream_abandoned(self)
                    raise httpx2.ReadTimeout("the upstream sent nothing in time")
                self._cond.wait(remaining)
            chunks = self._chunks
            data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
        self.release(len(data))
        return data

    def attach_sink(self, sink: StreamSink) -> None:
        """From now on the reader hands this stream's data to ``sink``; what was buffered
        already goes to it first, on this thread (under the stream's lock, so in order)."""
        with self._cond:
            buffered = list(self._chunks)
            self._chunks.clear()
            self._sink = sink
            for data in buffered:
                sink.on_data(data, self)
            if buffered:
                sink.on_read_end()
            if self._error is not None:
                sink.on_error(self._error)
            elif self._ended:
                sink.on_end()

    def release(self, size: int) -> None:
        """``size`` bytes of this stream were consumed: the server may send that much more."""
        self._unreleased += size
        if self._unreleased >= _STREAM_WINDOW_STEP:
            size, self._unreleased = self._unreleased, 0
            self.connection._open_stream_window(self.stream_id, size)

    def cancel(self) -> None:
        """Reset the stream (``RST_STREAM CANCEL``) from any thread; wakes whoever waits on it
        (a reader, an upload waiting for window)."""
        self._abort(RequestCancelled("the request was cancelled"))

    def close(self) -> None:
        """The caller is done: a stream not read to its end is reset."""
        if not self._ended:
            self._abort(RequestCancelled("the response was closed before its end"))

    def _abort(self, error: BaseException) -> None:
        # The error first: the reset wakes an upload waiting for window, which must see it.
        self._fail(error)
        self.connection._reset(self, h2.errors.ErrorCodes.CANCEL)
        self.connection._stream_abandoned(self)

    def check_deadline(self, now: float) -> None:
        """From the housekeeper: a sink-fed stream whose upstream went quiet times out."""
        sink = self._sink
        if sink is None or self.finished:
            return
        if sink.check(now):
            self.last_data_at = now
            return
        timeout = self.read_timeout_s
        if timeout is not None and now - self.last_data_at >= timeout:
            self._abort(httpx2.ReadTimeout("the upstream sent nothing in time"))

    @property
    def has_sink(self) -> bool:
        return self._sink is not None


class _GoawayFilter:
    """Takes GOAWAY frames out of the inbound bytes (see the module docstring).

    Only frame headers are looked at (nine bytes per frame), so the cost is one small step per
    frame; the bytes between GOAWAY frames pass through unchanged.
    """

    __slots__ = ("_pending", "_remaining")

    def __init__(self) -> None:
        self._remaining = 0
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes | tuple[int, int]]:
        """The bytes for ``h2`` and, in order, ``(last_stream_id, error_code)`` of each GOAWAY."""
        if self._pending:
            data, self._pending = self._pending + data, b""
        size = len(data)
        pos = min(self._remaining, size)
        self._remaining -= pos
        start = 0
        out: list[bytes | tuple[int, int]] = []
        while pos < size:
            if size - pos < _FRAME_HEADER:
                if start < pos:
                    out.append(data[start:pos])
                self._pending = data[pos:]
                return out
            length = int.from_bytes(data[pos : pos + 3], "big")
            end = pos + _FRAME_HEADER + length
            if data[pos + 3] != _GOAWAY:
                if end > size:
                    self._remaining = end - size
                    pos = size
                    break
                pos = end
                continue
            if length < 8 or length > 16384 or int.from_bytes(data[pos + 5 : pos + 9], "big"):
                raise h2.exceptions.ProtocolError("malformed GOAWAY frame")
            if end > size:
                if start < pos:
                    out.append(data[start:pos])
                self._pending = data[pos:]
                return out
            if start < pos:
                out.append(data[start:pos])
            payload = data[pos + _FRAME_HEADER : end]
            last_stream_id = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            out.append((last_stream_id, int.from_bytes(payload[4:8], "big")))
            start = pos = end
        if start < size:
            out.append(data[start:size] if start else data)
        return out


def _error_name(code: int) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return f"error {code}"


class Http2Connection:
    """One HTTP/2 connection; see the module docstring for who does what."""

    def __init__(
        self,
        sock: ConnectedSocket,
        *,
        authority: bytes,
        scheme: bytes,
        limits: ConnectionLimits,
        on_change: Callable[[], None],
    ) -> None:
        self._sock = sock
        self.authority = authority
        self.scheme = scheme
        self._limits = limits
        self._on_change = on_change
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self._h2 = h2.connection.H2Connection(config=config)
        self._state_lock = threading.Lock()
        self._window_changed = threading.Condition(self._state_lock)
        self._send_lock = threading.Lock()
        self._dirty = False
        self._streams: dict[int, Http2Stream] = {}
        self._sinks_fed: list[StreamSink] = []
        self._goaway = _GoawayFilter()
        self._error: BaseException | None = None
        self._draining = False
        self._unacked_connection = 0
        self._ping_sent_at: float | None = None
        self._ping_count = 0
        self._sending_since: float | None = None
        now = time.monotonic()
        self.last_received_at = now
        self._last_stream_frame_at = now
        self.idle_since: float | None = now
        with self._state_lock:
            self._h2.initiate_connection()
            self._h2.update_settings(
                {
                    h2.settings.SettingCodes.ENABLE_PUSH: 0,
                    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: _MAX_HEADER_LIST_SIZE,
                }
            )
            self._h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
            self._dirty = True
        self._flush()
        self._reader = threading.Thread(
            target=self._read_loop, name=f"h2-reader {authority.decode()}", daemon=True
        )
        self._reader.start()

    # -- state seen by the pool ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._error is not None

    @property
    def usable(self) -> bool:
        """Takes new streams at some point (not failed, not going away)."""
        return self._error is None and not self._draining

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    def try_open(
        self, headers: Sequence[tuple[bytes, bytes]], body: bytes = b""
    ) -> Http2Stream | None:
        """Open a stream and queue its request, or None when this connection has no room now.

        A body that fits in one DATA frame within the stream's window (every JSON request the
        SDK makes) is queued with the headers and ends the stream, so the whole request leaves
        in one write and reaches the server in one read; ``request_sent`` says so. Otherwise
        only the headers are queued, and the caller sends the body with ``send_body``.

        Choosing the stream id and queueing its frames happen under one lock, so ids go out in
        order whatever the number of threads. The caller sends them with ``flush`` once it has
        let go of its own locks: the pool calls this under its lock, and a send may wait for
        the interpreter lock after its system call, which would stall every other request
        waiting for the pool meanwhile.
        """
        with self._state_lock:
            if self._error is not None or self._draining:
                return None
            if len(self._streams) >= self._h2.remote_settings.max_concurrent_streams:
                return None
            try:
                stream_id = self._h2.get_next_available_stream_id()
            except h2.exceptions.NoAvailableStreamIDError:
                self._draining = True
                return None
            stream = Http2Stream(self, stream_id)
            self._h2.send_headers(stream_id, headers, end_stream=not body)
            whole = not body or len(body) <= min(
                self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size
            )
            if body and whole:
                self._h2.send_data(stream_id, body, end_stream=True)
            self._streams[stream_id] = stream
            stream.request_sent = whole
            self._dirty = True
            self.idle_since = None
        return stream

    def flush(self) -> None:
        """Send what is queued (the request ``try_open`` queued, and anything else)."""
        self._flush()

    def send_body(self, stream: Http2Stream, body: bytes, timeout_s: float | None) -> None:
        """Send the request body ``try_open`` left, waiting for window as long as ``timeout_s``
        per step; its last DATA frame ends the stream.

        The wait ends early when the stream fails (a cancel, a reset, a connection error) or
        when the server already sent its whole response (RFC 9113 §8.1: then the rest of the
        body is not needed, and the response stands).
        """
        sid = stream.stream_id
        view = memoryview(body)
        while view:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            with self._state_lock:
                while True:
                    if stream._error is not None:
                        raise stream._error
                    if stream._ended:
                        self._abandon_body(stream)
                        break
                    if self._error is not None:
                        raise self._error
                    window = min(
                        self._h2.local_flow_control_window(sid),
                        self._h2.max_outbound_frame_size,
                        len(view),
                    )
                    if window > 0:
                        last = window == len(view)
                        self._h2.send_data(sid, view[:window].tobytes(), end_stream=last)
                        self._dirty = True
                        if last:
                            stream.request_sent = True
                            self._forget_if_done_locked(stream)
                        break
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        error = httpx2.WriteTimeout("the upstream never opened its window")
                        self._reset_locked(stream, h2.errors.ErrorCodes.CANCEL)
                        stream._error = error
                        raise error
                    self._window_changed.wait(remaining)
            self._flush()
            if stream.request_sent:
                return  # all sent, or the response came complete first
            view = view[window:]
        with self._state_lock:
            if stream.finished or self._error is not None:
                return None
            self._h2.end_stream(sid)
            stream.request_sent = True
            self._dirty = True
            self._forget_if_done_locked(stream)
        self._flush()
        return None

    def _abandon_body(self, stream: Http2Stream) -> None:
        """The response is complete before the request: stop sending (called locked)."""
        self._reset_locked(stream, h2.errors.ErrorCodes.NO_ERROR)
        stream.request_sent = True
        self._forget_if_done_locked(stream)

    # -- outbound ------------------------------------------------------------------------

    def _flush(self) -> None:
        """Send what ``h2`` queued, unless another thread is sending: it sends ours too."""
        while self._error is None:
            if not self._send_lock.acquire(blocking=False):
                return
            try:
                while True:
                    with self._state_lock:
                        self._dirty = False
                        data = self._h2.data_to_send()
                    if not data:
                        break
                    self._sending_since = time.monotonic()
                    self._sock.sendall(data)
                    self._sending_since = None
            except OSError as exc:
                self._sending_since = None
                self._send_lock.release()
                self.fail(httpx2.WriteError(f"writing to the upstream failed: {exc}"))
                return
            self._send_lock.release()
            if not self._dirty:
                return

    def _reset(self, stream: Http2Stream, code: h2.errors.ErrorCodes) -> None:
        with self._state_lock:
            self._reset_locked(stream, code)
        self._flush()
        self._on_change()

    def _reset_locked(self, stream: Http2Stream, code: h2.errors.ErrorCodes) -> None:
        if self._streams.pop(stream.stream_id, None) is None:
            return
        self._window_changed.notify_all()
        if self._error is None:
            # Closed in h2 already: nothing to tell the server.
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.reset_stream(stream.stream_id, error_code=code)
            self._dirty = True
        self._note_idle_locked()

    def _stream_abandoned(self, stream: Http2Stream) -> None:
        """A stream was given up on (a timeout, a cancel). If neither it nor any other stream
        of this connection heard from the server for a while, new requests go elsewhere: a
        server that answers no stream but keeps the connection (and its PINGs) alive would
        otherwise take every later request too. Open streams go on."""
        now = time.monotonic()
        quiet = now - max(self._last_stream_frame_at, stream.last_data_at)
        if quiet >= _QUIET_RETIRE_S and not self._draining:
            with self._state_lock:
                self._draining = True
            self._on_change()

    def _forget_if_done_locked(self, stream: Http2Stream) -> None:
        done = stream._ended and stream.request_sent
        if done and self._streams.pop(stream.stream_id, None) is not None:
            self._note_idle_locked()

    def _note_idle_locked(self) -> None:
        if not self._streams:
            self.idle_since = time.monotonic()

    def _open_stream_window(self, stream_id: int, size: int) -> None:
        with self._state_lock:
            if self._error is not None or stream_id not in self._streams:
                return
            try:
                self._h2.increment_flow_control_window(size, stream_id=stream_id)
            except h2.exceptions.ProtocolError:
                return  # the stream closed meanwhile
            self._dirty = True
        self._flush()

    # -- the reader thread ------------------------------------------------------------------

    def _read_loop(self) -> None:
        recv = self._sock.recv
        try:
            while True:
                data = recv(_RECV_SIZE)
                if not data:
                    raise httpx2.ReadError("the upstream closed the connection")
                self.last_received_at = time.monotonic()
                self._receive(data)
                if self._error is not None:
                    return
        except BaseException as exc:
            if self._error is None:
                self._fail_from_reader(exc)

    def _fail_from_reader(self, exc: BaseException) -> None:
        """The reader stopped with ``exc`` (the connection was not closed on purpose)."""
        if isinstance(exc, httpx2.TransportError):
            self.fail(exc)
        elif isinstance(exc, h2.exceptions.ProtocolError):
            self.fail(
                httpx2.RemoteProtocolError(
                    f"the upstream broke the HTTP/2 protocol ({type(exc).__name__}: {exc})"
                )
            )
        elif isinstance(exc, OSError):
            self.fail(httpx2.ReadError(f"reading from the upstream failed: {exc}"))
        else:  # a bug here must still end every stream
            logger.error("HTTP/2 reader failed", exc_info=exc)
            self.fail(httpx2.RemoteProtocolError(f"HTTP/2 reader failed ({type(exc).__name__})"))

    def _receive(self, data: bytes) -> None:
        for part in self._goaway.feed(data):
            if isinstance(part, tuple):
                self._on_goaway(*part)
                continue
            with self._state_lock:
                events = self._h2.receive_data(part)
                self._dirty = True
            self._dispatch(events)
        self._flush()
        # Last, just before the next read: a consumer woken now finds the reader off the CPU.
        fed = self._sinks_fed
        if fed:
            self._sinks_fed = []
            for sink in dict.fromkeys(fed):
                sink.on_read_end()

    def _dispatch(self, events: list[h2.events.Event]) -> None:
        streams = self._streams
        opened = 0
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self._last_stream_frame_at = self.last_received_at
                size = event.flow_controlled_length or 0
                opened += size
                stream = streams.get(event.stream_id)
                if stream is not None:
                    data = event.data or b""
                    if data:
                        stream._on_data(data)
                    if size > len(data):
                        stream.release(size - len(data))  # padding
            elif isinstance(event, h2.events.StreamEnded):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_end()
                    with self._state_lock:
                        self._forget_if_done_locked(stream)
                    self._on_change()
            elif isinstance(event, h2.events.ResponseReceived):
                self._last_stream_frame_at = self.last_received_at
                stream = streams.get(event.stream_id)
                if stream is not None:
                    self._on_response(stream, event.headers)
            elif isinstance(event, h2.events.StreamReset):
                self._on_stream_reset(event.stream_id, event.error_code)
            elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                with self._state_lock:
                    self._window_changed.notify_all()
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    self._on_change()
            elif isinstance(event, h2.events.PingAckReceived):
                self._ping_sent_at = None
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._on_goaway(event.last_stream_id or 0, int(event.error_code or 0))
        if opened:
            self._unacked_connection += opened
            if self._unacked_connection >= _CONNECTION_WINDOW_STEP:
                size, self._unacked_connection = self._unacked_connection, 0
                with self._state_lock:
                    self._h2.increment_flow_control_window(size)
                    self._dirty = True

    def _on_response(self, stream: Http2Stream, headers: list[tuple[bytes, bytes]]) -> None:
        status = 0
        size = 0
        fields: list[tuple[bytes, bytes]] = []
        for name, value in headers:
            size += len(name) + len(value) + 32  # as SETTINGS_MAX_HEADER_LIST_SIZE counts
            if name == b":status":
                status = int(value)
            elif not name.startswith(b":"):
                fields.append((name, value))
        if size > MAX_RESPONSE_HEADERS:
            stream._abort(
                httpx2.RemoteProtocolError(
                    f"the upstream sent {size} bytes of response headers "
                    f"(at most {MAX_RESPONSE_HEADERS} accepted)"
                )
            )
            return
        stream._on_headers(status, fields)

    def _on_stream_reset(self, stream_id: int, code: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        with self._state_lock:
            self._streams.pop(stream_id, None)
            self._window_changed.notify_all()
            self._note_idle_locked()
        if stream._ended:
            self._on_change()
            return  # the response was complete: a reset now changes nothing (RFC 9113 §8.1)
        error: BaseException
        if code == h2.errors.ErrorCodes.REFUSED_STREAM and not stream.delivered:
            error = StreamRefused("the upstream refused the stream before processing it")
        else:
            error = httpx2.RemoteProtocolError(
                f"the upstream reset the stream ({_error_name(code)})"
            )
        stream._fail(error)
        self._on_change()

    def _on_goaway(self, last_stream_id: int, code: int) -> None:
        """A graceful GOAWAY lets the streams it covers finish; one with an error ends all."""
        if code != h2.errors.ErrorCodes.NO_ERROR:
            self.fail(
                httpx2.RemoteProtocolError(
                    f"the upstream closed the connection ({_error_name(code)})"
                )
            )
            return
        with self._state_lock:
            self._draining = True
            beyond = [s for sid, s in self._streams.items() if sid > last_stream_id]
            for stream in beyond:
                del self._streams[stream.stream_id]
            self._window_changed.notify_all()
            self._note_idle_locked()
        for stream in beyond:
            if stream.delivered:
                stream._fail(
                    httpx2.RemoteProtocolError("the upstream went away before this stream ended")
                )
            else:
                stream._fail(StreamRefused("the upstream went away before processing it"))
        self._on_change()

    # -- the pool's housekeeper -------------------------------------------------------------

    def housekeep(self, now: float) -> None:
        """Keep-alive PING, dead-connection detection, stuck writes, sink-fed stream deadlines."""
        if self._error is not None:
            return
        limits = self._limits
        sent_at = self._ping_sent_at
        if sent_at is not None and now - sent_at >= limits.ping_timeout_s:
            self.fail(httpx2.ReadTimeout("the upstream did not answer a PING: connection dead"))
            return
        sending = self._sending_since
        if sending is not None and now - sending >= limits.write_timeout_s:
            self.fail(httpx2.WriteTimeout("the upstream stopped reading"))
            return
        if sent_at is None and now - self.last_received_at >= limits.ping_interval_s:
            self._ping_count += 1
            with self._state_lock:
                try:
                    self._h2.ping(self._ping_count.to_bytes(8, "big"))
                except h2.exceptions.ProtocolError:
                    return
                self._dirty = True
            self._ping_sent_at = now
            self._flush()
        for stream in list(self._streams.values()):
            if stream.has_sink:
                stream.check_deadline(now)

    # -- the end -------------------------------------------------------------------------

    def fail(self, error: BaseException) -> None:
        """End the connection and every stream on it with ``error``; safe from any thread."""
        with self._state_lock:
            if self._error is not None:
                return
            self._error = error
            streams = list(self._streams.values())
            self._streams.clear()
            self._window_changed.notify_all()
        for stream in streams:
            stream._fail(error)
        self._close_socket()
        self._on_change()

    def close(self) -> None:
        """Close politely (GOAWAY) if the connection still works; streams on it fail."""
        if self._error is None:
            with self._state_lock:
                try:
                    self._h2.close_connection()
                    self._dirty = True
                except h2.exceptions.ProtocolError:
                    pass
            self._flush()
        self.fail(httpx2.ReadError("the connection was closed"))

    def _close_socket(self) -> None:
        with contextlib.suppress(OSError):  # already gone
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def join_reader(self, timeout_s: float) -> None:
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout_s)
