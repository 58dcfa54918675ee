"""One HTTP/1.1 connection on ``h11``'s public API: one request at a time, keep-alive, cancellable.

Why this exists: many OpenAI-compatible servers (llama.cpp, vLLM behind a plain proxy) speak
only HTTP/1.1, so the transport needs an HTTP/1.1 connection beside its HTTP/2 one. httpcore
has one, but making it cancellable from another thread and safe to pool meant patching its
private internals, which change between its patch releases. ``h11`` is the sans-I/O protocol
engine under httpcore: with it, owning the socket I/O is a page of code that this module keeps
in plain sight.

How a request flows:

1. The pool hands an idle ``HTTP11Connection`` (over a socket it already connected, TLS and
   ALPN done) to one request: ``handle_request`` claims it (``ConnectionNotAvailable`` if it
   is not idle, before anything is sent), registers a cancel callback with the thread's
   ``CancelScope`` and writes the request line, headers and body through ``h11``.
2. It reads until ``h11`` yields the response head (skipping 1xx) and returns an
   ``httpx2.Response`` whose stream yields each network read's body bytes as soon as they are
   parsed: a streaming completion is never buffered.
3. Closing the response releases the connection: when the body was read to its end (or its
   end is already received and a short read without waiting reaches it) and both
   sides of ``h11`` are ``DONE``, it starts the next cycle and tells the owner "reusable";
   otherwise (closed early, an error, ``Connection: close``, a cancel) it closes the socket and
   tells the owner "not reusable". The owner learns this through ``on_release``, called once
   for every request that claimed the connection, also when ``handle_request`` raised.

Between requests a connection waits in ``IdleConnections``, which hands out only connections
still fit to use: within their keep-alive expiry, and not closed by the server meanwhile (an
idle HTTP/1.1 socket that turns readable was closed). When the server closes a kept-alive
connection just as a request goes out (no byte of answer), the server never took the request
up, and ``ConnectionNotAvailable`` tells the pool to send it again on a new connection.

Cancellation shuts the socket down (``SHUT_RDWR``), which wakes a read or write blocked in the
request's thread; it is armed only while that request owns the connection, so a late cancel
never touches a connection that went back to the pool. Errors are httpx2's own
(``ReadTimeout``, ``WriteTimeout``, ``ReadError``, ``WriteError``, ``RemoteProtocolError``,
``LocalProtocolError``), with the timeouts of ``request.extensions["timeout"]``.
"""

from __future__ import annotations

import contextlib
import enum
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

import h11
import httpx2

from backend_ai.streaming.cancel import register_cancel
from backend_ai.streaming.sockets import ConnectedSocket
from backend_ai.streaming.tls import TLSStream

__all__ = [
    "ConnectionNotAvailable",
    "HTTP11Connection",
    "IdleConnections",
    "OriginLike",
    "ReleaseCallback",
    "origin_key",
    "url_origin_key",
]

#: Told once per request whether the connection may serve another one (``True``) or was closed.
ReleaseCallback = Callable[["HTTP11Connection", bool], None]

_READ_SIZE = 64 * 1024
#: Most body bytes read (and dropped) to reach the end of a response closed early.
_DRAIN_LIMIT = 64 * 1024
#: Largest response head (status line and headers) accepted; httpcore allows the same.
_MAX_HEAD_BYTES = 100 * 1024


class OriginLike(Protocol):
    """What a connection needs to know of its origin (the pool's ``Origin`` fits)."""

    @property
    def scheme(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


def origin_key(origin: OriginLike) -> tuple[str, str, int]:
    return (origin.scheme, origin.host, origin.port)


def url_origin_key(url: httpx2.URL) -> tuple[str, str, int]:
    return (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))


class ConnectionNotAvailable(httpx2.ConnectError):
    """This connection cannot carry the request, which the server did not process: send it on
    another connection.

    Raised before anything is sent when the connection is busy, closed or for another origin;
    and when the server closes a kept-alive connection without a byte of answer to the request
    just written. That is the keep-alive race — the server closed the idle connection as the
    request went out — and, as Go's ``net/http`` and curl do, the request is worth one more try
    on a new connection (only a request whose body can be sent again).
    """


class _State(enum.Enum):
    IDLE = "idle"
    ACTIVE = "active"
    CLOSED = "closed"


class _Timeouts(NamedTuple):
    read: float | None
    write: float | None

    @classmethod
    def of(cls, request: httpx2.Request) -> _Timeouts:
        timeout = request.extensions.get("timeout") or {}
        return cls(timeout.get("read"), timeout.get("write"))


class HTTP11Connection:
    """An HTTP/1.1 client connection over one connected socket, one request at a time.

    Thread model: one thread at a time sends a request and reads its response (the thread the
    pool handed the connection to); any thread may call ``close``, the pool's checks
    (``is_idle``, ``has_expired``, ``is_stale``) and, through the ``CancelScope``, cancel.
    """

    def __init__(
        self,
        sock: ConnectedSocket,
        origin: OriginLike,
        *,
        keepalive_expiry: float | None = None,
        on_release: ReleaseCallback | None = None,
        max_head_bytes: int = _MAX_HEAD_BYTES,
    ) -> None:
        self._sock = sock
        self.origin = origin
        self.origin_key = origin_key(origin)
        self._keepalive_expiry = keepalive_expiry
        self._on_release = on_release
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head_bytes)
        self._lock = threading.Lock()
        self._state = _State.IDLE
        self._idle_since = time.monotonic()
        self._in_flight: object | None = None  # the request a cancel may still stop
        self._stopped: str | None = None  # why the socket was shut down under a request
        self._received_any = False  # any byte of the current request's response
        self._socket_timeout: float | None = sock.gettimeout()
        self.requests = 0

    def __repr__(self) -> str:
        scheme, host, port = self.origin_key
        return f"<HTTP11Connection {scheme}://{host}:{port} {self._state.value} #{self.requests}>"

    # -- what the pool asks ------------------------------------------------------------------------
    def can_handle(self, url: httpx2.URL) -> bool:
        return url_origin_key(url) == self.origin_key

    def is_idle(self) -> bool:
        return self._state is _State.IDLE

    def is_closed(self) -> bool:
        return self._state is _State.CLOSED

    def has_expired(self, now: float | None = None) -> bool:
        """Idle for longer than the keep-alive expiry (servers drop idle connections too)."""
        if self._state is not _State.IDLE or self._keepalive_expiry is None:
            return False
        now = time.monotonic() if now is None else now
        return now - self._idle_since > self._keepalive_expiry

    def is_stale(self) -> bool:
        """True when this idle connection must not carry a request: it is closed, or the server
        closed it (or sent bytes nobody asked for) while it waited in the pool.

        An idle HTTP/1.1 connection has nothing to read, so "readable" means end-of-file or
        garbage. A plain socket is polled once with a zero timeout. A TLS stream is read
        without waiting, because what made it readable may be a session ticket, which is no
        reason to drop it; application data read by that check would be the start of a
        response nobody asked for, so it makes the connection stale too.
        """
        with self._lock:
            if self._state is not _State.IDLE:
                return self._state is _State.CLOSED
            try:
                if isinstance(self._sock, TLSStream):
                    return self._sock.has_data_or_eof()
                return _readable_now(self._sock)
            except (OSError, ValueError):
                return True

    def close(self) -> None:
        """Close the socket; safe to call twice and from any thread.

        While a request owns the connection the socket is only shut down, which wakes its
        thread; that thread closes the socket when it releases the connection.
        """
        with self._lock:
            if self._state is _State.CLOSED:
                return
            if self._state is _State.ACTIVE:
                self._stopped = "the connection was closed"
                self._shutdown_locked()
                return
            self._state = _State.CLOSED
            self._sock.close()

    # -- one request -------------------------------------------------------------------------------
    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` and return its response once the head arrived; the body streams.

        The response must be closed (httpx2 does it once the body is read, or on leaving
        ``client.stream(...)``): that releases the connection.
        """
        if not self.can_handle(request.url):
            raise ConnectionNotAvailable(
                f"{self!r} does not serve {request.url.scheme}://{request.url.netloc.decode()}",
                request=request,
            )
        in_flight = object()
        with self._lock:
            if self._state is not _State.IDLE:
                raise ConnectionNotAvailable(f"connection is {self._state.value}", request=request)
            self._state = _State.ACTIVE
            self._in_flight = in_flight
            self._received_any = False
            self.requests += 1
        register_cancel(lambda: self._cancel(in_flight))
        timeouts = _Timeouts.of(request)
        try:
            try:
                self._send_request(request, timeouts.write)
            except httpx2.WriteError as write_error:
                head = self._head_after_failed_write(request, timeouts.read, write_error)
            else:
                head = self._receive_head(request, timeouts.read)
        except (httpx2.ReadError, httpx2.WriteError, httpx2.RemoteProtocolError) as exc:
            self._release(reusable=False)
            if self._lost_keepalive_race(request):
                raise ConnectionNotAvailable(
                    "the server closed this kept-alive connection without answering",
                    request=request,
                ) from exc
            raise
        except BaseException:
            self._release(reusable=False)
            raise
        return httpx2.Response(
            status_code=head.status_code,
            headers=list(head.headers.raw_items()),
            stream=_ResponseStream(self, request, timeouts.read),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": bytes(head.reason)},
        )

    def _lost_keepalive_race(self, request: httpx2.Request) -> bool:
        if self.requests == 1 or self._received_any or self._stopped is not None:
            return False  # a new connection, an answer begun, or our own cancel
        try:
            request.content  # noqa: B018 - raises if the body cannot be sent again
        except httpx2.RequestNotRead:
            return False
        return True

    def _send_request(self, request: httpx2.Request, timeout: float | None) -> None:
        headers = list(request.headers.raw)
        if "host" not in request.headers:
            headers.insert(0, (b"Host", request.url.netloc))
        head = h11.Request(
            method=request.method.encode("ascii"), target=request.url.raw_path, headers=headers
        )
        try:
            body = request.content
        except httpx2.RequestNotRead:
            body = None
        if body is not None:
            # One write for head and body: two small writes may wait on a delayed ACK.
            events = (head, h11.Data(data=body), h11.EndOfMessage())
            self._write(request, self._encode(request, *events), timeout)
            return
        stream = request.stream
        if not isinstance(stream, httpx2.SyncByteStream):
            raise httpx2.LocalProtocolError(
                "an async request body cannot be sent on a sync connection", request=request
            )
        self._write(request, self._encode(request, head), timeout)
        for chunk in stream:
            self._write(request, self._encode(request, h11.Data(data=chunk)), timeout)
        self._write(request, self._encode(request, h11.EndOfMessage()), timeout)

    def _head_after_failed_write(
        self, request: httpx2.Request, timeout: float | None, write_error: httpx2.WriteError
    ) -> h11.Response:
        """A server may answer (413, 401) and close before reading the whole body: its answer
        says more than the broken pipe, so read it if it is there."""
        if self._stopped is not None:
            raise write_error
        try:
            return self._receive_head(request, timeout)
        except httpx2.HTTPError:
            raise write_error from None

    def _encode(self, request: httpx2.Request, *events: h11.Event) -> bytes:
        try:
            return b"".join(self._h11.send(event) or b"" for event in events)
        except h11.LocalProtocolError as exc:
            raise httpx2.LocalProtocolError(str(exc), request=request) from exc

    def _receive_head(self, request: httpx2.Request, timeout: float | None) -> h11.Response:
        while True:
            event = self._next_event(request, timeout)
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.InformationalResponse):
                continue  # 100 Continue, 103 Early Hints
            if isinstance(event, h11.ConnectionClosed):
                raise httpx2.RemoteProtocolError(
                    "server closed the connection without sending a response", request=request
                )
            raise httpx2.RemoteProtocolError(
                f"unexpected {type(event).__name__} before the response head", request=request
            )

    def _read_body(self, request: httpx2.Request, timeout: float | None) -> tuple[bytes, bool]:
        """The body bytes parsed from one network read (or already buffered), and whether the
        body ended: what one network read brings goes out at once."""
        parts: list[bytes] = []
        while True:
            event = self._next_event(request, timeout, wait=not parts)
            if event is h11.NEED_DATA:
                return b"".join(parts), False
            if isinstance(event, h11.Data):
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts), True
            else:
                raise httpx2.RemoteProtocolError(
                    f"unexpected {type(event).__name__} in the response body", request=request
                )

    def _next_event(
        self, request: httpx2.Request, timeout: float | None, *, wait: bool = True
    ) -> object:
        """The next ``h11`` event, reading the socket while ``h11`` needs data (if ``wait``)."""
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._raise_if_stopped(request)
                raise httpx2.RemoteProtocolError(str(exc), request=request) from exc
            if event is not h11.NEED_DATA or not wait:
                return event
            self._receive(request, timeout)

    def _receive(self, request: httpx2.Request, timeout: float | None) -> None:
        self._set_timeout(timeout)
        try:
            data = self._sock.recv(_READ_SIZE)
        except TimeoutError:
            self._raise_if_stopped(request)
            raise httpx2.ReadTimeout("timed out reading the response", request=request) from None
        except OSError as exc:
            self._raise_if_stopped(request)
            raise httpx2.ReadError(str(exc) or repr(exc), request=request) from exc
        self._raise_if_stopped(request)
        if data:
            self._received_any = True
        elif self._h11.their_state is h11.SEND_RESPONSE:
            raise httpx2.RemoteProtocolError(
                "server closed the connection without sending a complete response head",
                request=request,
            )
        self._h11.receive_data(data)

    def _write(self, request: httpx2.Request, data: bytes, timeout: float | None) -> None:
        if not data:
            return
        self._set_timeout(timeout)
        try:
            self._sock.sendall(data)
        except TimeoutError:
            self._raise_if_stopped(request)
            raise httpx2.WriteTimeout("timed out sending the request", request=request) from None
        except OSError as exc:
            self._raise_if_stopped(request)
            raise httpx2.WriteError(str(exc) or repr(exc), request=request) from exc

    def _raise_if_stopped(self, request: httpx2.Request) -> None:
        # A shut-down socket reads as end-of-file, which for a body delimited by the close
        # would pass for a complete response: the reason, set before the shutdown, tells them
        # apart.
        if self._stopped is not None:
            raise httpx2.ReadError(self._stopped, request=request)

    def _set_timeout(self, timeout: float | None) -> None:
        if timeout != self._socket_timeout:
            self._sock.settimeout(timeout)
            self._socket_timeout = timeout

    # -- the end of a request ----------------------------------------------------------------------
    def _cancel(self, in_flight: object) -> None:
        """Stop the request ``in_flight`` if it still owns the connection; from any thread."""
        with self._lock:
            if self._in_flight is not in_flight:
                return
            self._stopped = "the request was cancelled"
            self._shutdown_locked()

    def _shutdown_locked(self) -> None:
        # A shutdown of the raw socket, also under TLS: it wakes the thread blocked in a read,
        # which sees the end of the stream.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def _body_ends_without_waiting(self, request: httpx2.Request) -> bool:
        """Whether the rest of a body closed early is already here (up to a small limit).

        A client that stops at the last event it needs (the ``openai`` SDK stops at
        ``[DONE]``) leaves the end of the body unread, yet usually already received: reading
        it without waiting keeps the connection for the next request instead of a new
        handshake.
        """
        if self._stopped is not None:
            return False
        left = _DRAIN_LIMIT
        try:
            while left > 0:
                data, complete = self._read_body(request, 0.0)  # 0: never block
                if complete:
                    return True
                left -= len(data)
        except httpx2.HTTPError:  # nothing more received yet, or a broken body
            return False
        return False

    def _h11_ready_for_next(self) -> bool:
        """Both sides ``DONE`` and nothing after the response: no end-of-file (a body delimited
        by the close ends with one) and no stray bytes."""
        if self._h11.our_state is not h11.DONE or self._h11.their_state is not h11.DONE:
            return False
        try:
            return self._h11.next_event() is h11.NEED_DATA
        except h11.ProtocolError:
            return False

    def _release(self, *, reusable: bool) -> None:
        """End the current request: keep the connection for the next one only if ``reusable``
        and ``h11`` agrees (both sides ``DONE``, no ``Connection: close``); else close it."""
        with self._lock:
            if self._state is not _State.ACTIVE:
                return
            self._in_flight = None
            reusable = reusable and self._stopped is None and self._h11_ready_for_next()
            if reusable:
                self._h11.start_next_cycle()
                self._state = _State.IDLE
                self._idle_since = time.monotonic()
            else:
                self._state = _State.CLOSED
                self._shutdown_locked()
                self._sock.close()
        if self._on_release is not None:
            self._on_release(self, reusable)


class IdleConnections:
    """HTTP/1.1 connections kept alive between requests, per origin: the keep-alive half of a
    pool (the transport's pool bounds how many connections are open).

    Give ``put`` to every connection as its ``on_release``. ``take`` returns the most recently
    used idle connection of an origin that is still fit to carry a request — within its
    keep-alive expiry and not closed by the server meanwhile — and closes the unfit ones it
    meets. At most ``max_idle`` connections wait; the one idle the longest makes room.
    ``on_close`` hears of every connection this store closes, for the pool's count.
    """

    def __init__(
        self,
        *,
        max_idle: int,
        on_close: Callable[[HTTP11Connection], None] | None = None,
    ) -> None:
        self._max_idle = max_idle
        self._on_close = on_close
        self._lock = threading.Lock()
        self._idle: list[HTTP11Connection] = []  # least recently used first
        self._closed = False

    def __len__(self) -> int:
        return len(self._idle)

    def take(self, origin: OriginLike) -> HTTP11Connection | None:
        key = origin_key(origin)
        unfit: list[HTTP11Connection] = []
        found = None
        with self._lock:
            for connection in reversed(self._idle):
                if connection.origin_key != key:
                    continue
                if connection.has_expired() or connection.is_stale():
                    unfit.append(connection)
                    continue
                found = connection
                break
            for connection in unfit:
                self._idle.remove(connection)
            if found is not None:
                self._idle.remove(found)
        self._discard(unfit)
        return found

    def put(self, connection: HTTP11Connection, reusable: bool) -> None:
        """Keep ``connection`` for a later request if ``reusable``; an ``on_release`` callback."""
        if not reusable:
            return
        evicted: list[HTTP11Connection] = []
        with self._lock:
            if self._closed:
                evicted.append(connection)
            else:
                self._idle.append(connection)
                while len(self._idle) > self._max_idle:
                    evicted.append(self._idle.pop(0))
        self._discard(evicted)

    def prune(self) -> None:
        """Close the connections past their keep-alive expiry or closed by the server."""
        with self._lock:
            unfit = [c for c in self._idle if c.has_expired() or c.is_stale()]
            self._idle = [c for c in self._idle if c not in unfit]
        self._discard(unfit)

    def close(self) -> None:
        """Close every idle connection; connections released later are closed too."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        self._discard(idle)

    def _discard(self, connections: list[HTTP11Connection]) -> None:
        for connection in connections:
            connection.close()
            if self._on_close is not None:
                self._on_close(connection)


def _readable_now(sock: ConnectedSocket) -> bool:
    """Whether ``sock`` has something to read (data or end-of-file), without waiting."""
    if hasattr(select, "poll"):  # ``select.select`` cannot watch descriptors above 1023
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class _ResponseStream(httpx2.SyncByteStream):
    """The body of one response: yields each network read's bytes; closing releases the
    connection, reusable only if the body was read to its end."""

    def __init__(
        self, connection: HTTP11Connection, request: httpx2.Request, timeout: float | None
    ) -> None:
        self._connection = connection
        self._request = request
        self._timeout = timeout
        self._complete = False
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        while not self._complete and not self._closed:
            data, self._complete = self._connection._read_body(self._request, self._timeout)
            if data:
                yield data

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            complete = self._complete or self._connection._body_ends_without_waiting(self._request)
            self._connection._release(reusable=complete)
