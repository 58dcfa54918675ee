"""An httpx transport whose streams can be cancelled, one at a time, from any thread.

Why this exists: with httpx 0.28 / httpcore 1.0.x, closing an HTTP/2 streaming response before
its end sends no RST_STREAM (httpcore issue #1022). The upstream never learns the client left —
it keeps generating, and billing, tokens — and h2 keeps the stream open, so after 100 early
closes the shared connection refuses every request ("Max outbound streams is 100, 100 open").
Cancellation is central to backend_ai, so this module fixes it where it happens:

* ``_CancellableHTTP2Connection`` resets a stream (``RST_STREAM CANCEL``) when its response is
  closed before the end, without touching the other streams of the connection.
* ``CancelScope`` cancels, from *another* thread, whatever a worker thread opened inside
  ``with scope:`` — including a request still waiting for its response headers. HTTP/2 resets
  the stream, queues a reset event for its reader and sends a PING whose ACK wakes a reader
  blocked on the shared socket; HTTP/1.1 shuts the socket down, which wakes the blocked read.
* Every call into the ``h2`` state machine is serialized per connection, and choosing a stream
  id and sending its headers happen as one step: httpcore does neither, which lets concurrent
  threads corrupt the state or send two requests with the same stream id (httpx #3002, #3072,
  #3324).
* A chunk read by one thread for another thread's stream reaches that stream at once: one
  thread at a time reads the shared socket and wakes the streams it read for (httpcore makes
  them wait for the next unrelated frame, a head-of-line stall between streams).
* A graceful GOAWAY (``NO_ERROR``; servers send it after N requests per connection — nginx and
  hypercorn after 1,000 — or when they restart) lets the streams it covers finish, as RFC 9113
  §6.8 says: h2 and httpcore otherwise fail every stream still open on that connection.

Only private httpcore names are touched here, and only here; ``setup.cfg`` pins httpcore to the
1.0.x series this was written and tested against.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import httpcore
import httpx
from httpcore._exceptions import ConnectionNotAvailable
from httpcore._sync.connection import HTTPConnection
from httpcore._sync.http2 import HTTP2Connection
from httpcore._sync.http11 import HTTP11Connection, HTTPConnectionState

from backend_ai.app.services.parallel_streaming.cancel import CancelScope, register_cancel

__all__ = ["CancelScope", "CancellableTransport", "shutdown_response"]

logger = logging.getLogger(__name__)

_PING_PAYLOAD = b"bai-wake"
_RESET_WRITE_TIMEOUT_S = 5.0

_local = threading.local()


def _attach_to_current_scope(callback: Callable[[], None]) -> None:
    register_cancel(callback)


class _SerializedH2State:
    """An ``h2.connection.H2Connection`` whose methods run one at a time.

    ``get_next_available_stream_id`` keeps a per-connection lock until the same thread sends
    that stream's headers, so ids go out in the order they were handed out.
    """

    def __init__(self, state: h2.connection.H2Connection) -> None:
        self._state = state
        self._lock = threading.RLock()
        self._opening = threading.Lock()
        self._opening_owner: int | None = None

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._state, name)
        if not callable(attribute):
            return attribute

        def serialized(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return serialized

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._state, name, value)

    # The per-chunk calls get explicit methods: no closure is built on the hot path.
    def receive_data(self, data: bytes) -> list[h2.events.Event]:
        with self._lock:
            return self._state.receive_data(data)

    def data_to_send(self, amount: int | None = None) -> bytes:
        with self._lock:
            return self._state.data_to_send(amount)

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        with self._lock:
            self._state.acknowledge_received_data(acknowledged_size, stream_id)

    def get_next_available_stream_id(self) -> int:
        self._opening.acquire()
        self._opening_owner = threading.get_ident()
        try:
            with self._lock:
                return self._state.get_next_available_stream_id()
        except BaseException:
            self.release_opening()
            raise

    def send_headers(self, stream_id: int, headers: Any, **kwargs: Any) -> None:
        try:
            with self._lock:
                self._state.send_headers(stream_id, headers, **kwargs)
        finally:
            self.release_opening()

    def release_opening(self) -> None:
        """Let the next stream be opened; a no-op unless this thread is opening one."""
        if self._opening_owner == threading.get_ident():
            self._opening_owner = None
            self._opening.release()


_Inputs = h2.connection.ConnectionInputs
_CLOSED = h2.connection.ConnectionState.CLOSED


class _GracefulGoawayStateMachine(h2.connection.H2ConnectionStateMachine):
    """h2's connection state machine, except that a closed connection (after GOAWAY) still
    takes the frames of streams the server promised to finish; no new stream can open."""

    _transitions: ClassVar[dict[Any, Any]] = {  # type: ignore[misc]
        **h2.connection.H2ConnectionStateMachine._transitions,
        **{
            (_CLOSED, frame_input): (None, _CLOSED)
            for frame_input in (
                _Inputs.RECV_HEADERS,
                _Inputs.RECV_DATA,
                _Inputs.RECV_WINDOW_UPDATE,
                _Inputs.RECV_PING,
                _Inputs.RECV_SETTINGS,
                _Inputs.RECV_RST_STREAM,
                _Inputs.RECV_PRIORITY,
                _Inputs.SEND_DATA,
                _Inputs.SEND_WINDOW_UPDATE,
                _Inputs.SEND_PING,
                _Inputs.SEND_SETTINGS,
                _Inputs.SEND_RST_STREAM,
            )
        },
    }


class _CancellableHTTP2Connection(HTTP2Connection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h2_state.state_machine = _GracefulGoawayStateMachine()
        self._h2_state = _SerializedH2State(self._h2_state)  # type: ignore[assignment]
        self._dispatch_lock = threading.Lock()
        self._reader_active = False
        self._stream_wakers: dict[int | None, threading.Event] = {}

    def _receive_events(self, request: httpcore.Request, stream_id: int | None = None) -> None:
        """Wait until ``stream_id`` has an event queued, reading the socket when nobody else is.

        httpcore holds one read lock for the whole socket read, so a frame the reading thread
        dispatches to another stream's queue sits there until that stream's thread gets the
        lock — and the reader, whose own queue is still empty, usually takes it again first
        and blocks in ``read()``: another stream's chunk then waits for an unrelated frame.
        Here one thread at a time is elected reader; after each read it wakes exactly the
        streams that got events; it keeps reading until its own stream has an event, then
        hands the reader role to a waiting stream whose queue is still empty. After a graceful
        GOAWAY the streams it covers keep reading (RFC 9113 §6.8) instead of all failing.
        """
        while True:
            with self._dispatch_lock:
                self._check_terminated(stream_id)
                if stream_id is not None and self._events.get(stream_id):
                    return
                if not self._reader_active:
                    self._reader_active = True
                    break
                wake = self._stream_wakers.get(stream_id)
                if wake is None:
                    wake = self._stream_wakers[stream_id] = threading.Event()
                wake.clear()
            wake.wait()
            if stream_id is None:
                return  # a flow-control wait: another thread's read counts as progress
        while True:
            try:
                events = self._read_incoming_data(request)
            except BaseException:
                self._dispatch([], keep_reading_for=None)
                raise
            keep_reading = self._dispatch(events, keep_reading_for=stream_id)
            self._write_outgoing_data(request)
            if not keep_reading:
                return

    def _check_terminated(self, stream_id: int | None) -> None:
        terminated = self._connection_terminated
        if terminated is None:
            return
        last_stream_id = terminated.last_stream_id
        if stream_id and last_stream_id and stream_id > last_stream_id:
            self._request_count -= 1
            raise ConnectionNotAvailable()
        if not (self._went_away_gracefully() and stream_id in self._events):
            raise httpcore.RemoteProtocolError(terminated)

    def _dispatch(self, events: list[h2.events.Event], *, keep_reading_for: int | None) -> bool:
        """Queue events for their streams and wake those streams. The reader keeps its role
        while its own stream got nothing (True: read again), which saves a thread hand-off per
        read; otherwise it hands the role to a stream still waiting for data."""
        with self._dispatch_lock:
            woken: set[int | None] = set()
            for event in events:
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    self._receive_remote_settings_change(event)
                elif isinstance(
                    event,
                    h2.events.ResponseReceived
                    | h2.events.DataReceived
                    | h2.events.StreamEnded
                    | h2.events.StreamReset,
                ):
                    if event.stream_id in self._events:
                        self._events[event.stream_id].append(event)
                        woken.add(event.stream_id)
                    elif isinstance(event, h2.events.DataReceived):
                        # Its response was closed meanwhile: nobody will read it.
                        self._release_window(event.stream_id, event.flow_controlled_length or 0)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self._connection_terminated = event
                    woken.update(self._stream_wakers)  # everyone re-checks the connection
            for waiting_stream, wake in self._stream_wakers.items():
                if waiting_stream in woken:
                    wake.set()
            if (
                keep_reading_for is not None
                and self._connection_terminated is None
                and keep_reading_for in self._events
                and not self._events[keep_reading_for]
            ):
                return True
            self._reader_active = False
            # Hand the reader role to one stream still waiting for data, if there is one.
            for waiting_stream, wake in self._stream_wakers.items():
                if not wake.is_set() and not self._events.get(waiting_stream):  # type: ignore[arg-type]
                    wake.set()
                    break
            return False

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        _local.headers_sent = False
        try:
            return super().handle_request(request)
        except httpcore.RemoteProtocolError:
            if self._went_away_gracefully() and not _local.headers_sent:
                # This request lost the race with the GOAWAY: the server never saw it, so the
                # pool may send it on another connection.
                raise ConnectionNotAvailable() from None
            raise
        finally:
            # Set if the request failed between choosing a stream id and sending its headers.
            self._serialized_state.release_opening()

    def _went_away_gracefully(self) -> bool:
        terminated = self._connection_terminated
        return terminated is not None and terminated.error_code == h2.errors.ErrorCodes.NO_ERROR

    def _send_request_headers(self, request: httpcore.Request, stream_id: int) -> None:
        super()._send_request_headers(request, stream_id)
        _local.headers_sent = True
        _attach_to_current_scope(functools.partial(self.cancel_stream, stream_id))

    @property
    def _serialized_state(self) -> _SerializedH2State:
        return self._h2_state  # type: ignore[return-value]

    def cancel_stream(self, stream_id: int) -> None:
        """Reset one stream from any thread and wake whoever is reading it."""
        with self._dispatch_lock:
            events = self._events.get(stream_id)
            if events is None:
                return  # already closed
            events.append(
                h2.events.StreamReset(
                    stream_id=stream_id, error_code=h2.errors.ErrorCodes.CANCEL, remote_reset=False
                )
            )
            wake = self._stream_wakers.get(stream_id)
            if wake is not None:
                wake.set()
        # If this stream's thread is the reader, blocked in read(), the PING's ACK wakes it.
        if self._reset(stream_id, wake_readers=True):
            self._flush(stream_id)

    def _response_closed(self, stream_id: int) -> None:
        with self._dispatch_lock:
            self._stream_wakers.pop(stream_id, None)
            unread = sum(
                event.flow_controlled_length or 0
                for event in self._events.get(stream_id, ())
                if isinstance(event, h2.events.DataReceived)
            )
        reset = self._reset(stream_id, wake_readers=False)
        # Data received but never read still counts against the connection's window: hand it
        # back, or every early close shrinks the window until the whole connection stalls.
        released = self._release_window(stream_id, unread)
        if reset or released:
            self._flush(stream_id)
        super()._response_closed(stream_id)

    def _release_window(self, stream_id: int, size: int) -> bool:
        if size <= 0:
            return False
        try:
            self._h2_state.acknowledge_received_data(size, stream_id)
        except h2.exceptions.ProtocolError:
            return False
        return True

    def _reset(self, stream_id: int, *, wake_readers: bool) -> bool:
        """Queue RST_STREAM unless the stream already ended; never raise. True when queued."""
        try:
            self._h2_state.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
            if wake_readers:
                self._h2_state.ping(_PING_PAYLOAD)
        except h2.exceptions.StreamClosedError:
            return False  # ended normally, or reset already: nothing to tell the server
        except h2.exceptions.ProtocolError:
            return False  # the connection is closing; the server sees that instead
        return True

    def _flush(self, stream_id: int) -> None:
        with self._write_lock:
            try:
                self._network_stream.write(self._h2_state.data_to_send(), _RESET_WRITE_TIMEOUT_S)
            except Exception:
                logger.debug("could not write the frames closing stream %d", stream_id)


class _RequestInFlight:
    """Cancels one HTTP/1.1 request by shutting its socket down — only while it is in flight:
    once its response is closed the connection may serve another request, which a late cancel
    must not break. A connection whose socket was shut down is never handed out again, even
    when the response happened to be complete already."""

    def __init__(self, connection: _CancellableHTTP11Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._done = False

    def cancel(self) -> None:
        with self._lock:
            if not self._done:
                self._connection.retire()
                _shutdown_socket(self._connection._network_stream)

    def finished(self) -> None:
        """The response is being closed: from now on a cancel does nothing."""
        with self._lock:
            self._done = True


class _TrackedStream:
    """A response body that tells its ``_RequestInFlight`` when it is closed."""

    def __init__(self, stream: Any, in_flight: _RequestInFlight) -> None:
        self._stream = stream
        self._in_flight = in_flight

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        self._in_flight.finished()
        self._stream.close()


def _shutdown_socket(network_stream: Any) -> None:
    """Wake a read blocked on this HTTP/1.1 connection; the server sees the connection close."""
    sock = network_stream.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class _CancellableHTTP11Connection(HTTP11Connection):
    """HTTP/1.1 whose request can be cancelled from another thread — once it owns the socket.

    The cancel callback is registered in ``_send_request_headers``, which httpcore calls only
    after this request claimed the connection: two requests may be offered the same idle
    connection, and the one that loses the race must not shut down the winner's socket.
    """

    _retired = False

    def retire(self) -> None:
        """Never hand this connection out again; the pool closes it once it is idle."""
        self._retired = True

    def is_available(self) -> bool:
        return not self._retired and super().is_available()

    def has_expired(self) -> bool:
        return (self._retired and self.is_idle()) or super().has_expired()

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        _local.in_flight = None
        try:
            response = super().handle_request(request)
        except BaseException:
            if _local.in_flight is not None:
                _local.in_flight.finished()
            raise
        if _local.in_flight is not None:
            response.stream = _TrackedStream(response.stream, _local.in_flight)
        return response

    def close_if_unclaimed(self) -> bool:
        """Close unless a request owns the connection now; atomic with httpcore's claim."""
        with self._state_lock:
            if self._state == HTTPConnectionState.ACTIVE:
                return False
            self._state = HTTPConnectionState.CLOSED
        self.close()
        return True

    def _send_request_headers(self, request: httpcore.Request) -> None:
        in_flight = _local.in_flight = _RequestInFlight(self)
        _attach_to_current_scope(in_flight.cancel)
        super()._send_request_headers(request)


class _CancellableConnection(HTTPConnection):
    """Builds our HTTP/1.1 and HTTP/2 connection classes where httpcore builds its own."""

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        try:
            with self._request_lock:
                if self._connection is None:
                    stream = self._connect(request)
                    ssl_object = stream.get_extra_info("ssl_object")
                    http2_negotiated = (
                        ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"
                    )
                    connection_class = (
                        _CancellableHTTP2Connection
                        if http2_negotiated or (self._http2 and not self._http1)
                        else _CancellableHTTP11Connection
                    )
                    self._connection = connection_class(
                        origin=self._origin, stream=stream, keepalive_expiry=self._keepalive_expiry
                    )
        except BaseException:
            self._connect_failed = True
            raise
        return self._connection.handle_request(request)


class _CancellablePool(httpcore.ConnectionPool):
    """httpcore's pool, building our connections, and never closing one a request just took.

    httpcore decides under its pool lock which idle connections to close, but closes them
    later, outside it; a request already handed such a connection may claim it in between
    (under the connection's own lock) and then have its socket closed under it.
    """

    _closing_pool = False

    def close(self) -> None:
        self._closing_pool = True
        super().close()

    def _close_connections(self, closing: list[httpcore.ConnectionInterface]) -> None:
        if self._closing_pool:
            super()._close_connections(closing)
            return
        claimed = []
        for connection in closing:
            inner = getattr(connection, "_connection", None)
            if isinstance(inner, _CancellableHTTP11Connection) and not inner.close_if_unclaimed():
                claimed.append(connection)
                continue
            connection.close()
        if claimed:
            with self._optional_thread_lock:
                self._connections.extend(claimed)  # back in the pool, with their requests

    def create_connection(self, origin: httpcore.Origin) -> httpcore.ConnectionInterface:
        if self._proxy is not None:
            return super().create_connection(origin)
        return _CancellableConnection(
            origin=origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=self._keepalive_expiry,
            http1=self._http1,
            http2=self._http2,
            retries=self._retries,
            local_address=self._local_address,
            uds=self._uds,
            network_backend=self._network_backend,
            socket_options=self._socket_options,
        )


class CancellableTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose streams reset on early close and obey ``CancelScope``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if type(self._pool) is httpcore.ConnectionPool:
            # Same layout, one overridden factory method: swapping the class keeps every
            # setting httpx derived (SSL context, limits, sockets) without repeating it here.
            self._pool.__class__ = _CancellablePool


def shutdown_response(response: Any) -> None:
    """Best-effort cancel of a response from a transport that is not ours (HTTP/1.1 only):
    shut its socket down so a read blocked on it returns. HTTP/2 sockets are shared and are
    left alone; such a stream stops when its worker next gets data."""
    if getattr(response, "http_version", "") == "HTTP/2":
        return
    network_stream = response.extensions.get("network_stream")
    if network_stream is not None:
        _shutdown_socket(network_stream)
