"""The httpx2 transport of the pooled client: our own HTTP/2 connections, cancellable streams.

The ``openai`` SDK builds and sends every request through an ``httpx2.Client`` (auth, base URL,
headers, typed errors for non-2xx answers); this transport is what that client sends with. It
exists because the protocol layer is where backend_ai's promises are kept or broken: a stream
closed early or cancelled from another thread must be reset upstream at once, a connection
error must end every stream on it with an error (never a truncated success), a hostile or
overloaded server (SETTINGS changes, GOAWAY, resets, flow control, pings) must never hang a
run. It is built on the public API of ``h2`` (``http2.py``: one reader thread per connection)
and of ``httpx2`` (this module), and plugs into ``CancelScope`` through ``register_cancel``.

Which protocol: HTTP/2 over TLS when the server picks ``h2`` in ALPN, h2c over ``http://`` with
prior knowledge; HTTP/1.1 otherwise (``http11.py``: one request per connection at a time,
keep-alive; a cancel shuts its socket down, which wakes the blocked read).

Following a chunk from the socket to the client, in reading order: ``sockets.py`` (connect,
TLS, which protocol), ``connection_pool.py`` (which connection a request goes on),
``http2.py`` (the reader thread and the streams it feeds), ``worker.py`` (``_SectionSink``:
SSE lines parsed on the reader, chunks posted to the run), ``channel.py`` (the run's queue
and its backpressure), ``manager.py`` (the consumer: everything queued, one write).

A request the server provably never processed (``REFUSED_STREAM`` before any response, or a
stream above a graceful GOAWAY's last stream id) is sent again on another connection, as
RFC 9113 §8.7 allows; nothing else is retried here.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import httpx2

from backend_ai.streaming.cancel import CancelScope, register_cancel
from backend_ai.streaming.connection_pool import ConnectionPool
from backend_ai.streaming.http2 import (
    ConnectionLimits,
    Http2Stream,
    StreamRefused,
)
from backend_ai.streaming.http11 import ConnectionNotAvailable
from backend_ai.streaming.sockets import OpenedSocket, Origin, tls_context

__all__ = ["UPSTREAM_STREAM", "CancelScope", "UpstreamTransport", "shutdown_response"]

#: Response extension holding the ``Http2Stream`` behind a response of this transport.
UPSTREAM_STREAM = "backend_ai.http2_stream"

_ATTEMPTS = 3
_NOT_FORWARDED = frozenset(
    {b"host", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class _ResponseBody(httpx2.SyncByteStream):
    """A response body read from its ``Http2Stream``; closing it early resets the stream."""

    def __init__(self, stream: Http2Stream, read_timeout_s: float | None) -> None:
        self._stream = stream
        self._timeout = read_timeout_s

    def __iter__(self) -> Iterator[bytes]:
        read = self._stream.read
        timeout = self._timeout
        while True:
            data = read(timeout)
            if not data:
                return
            yield data

    def close(self) -> None:
        self._stream.close()


class _PendingRequest:
    """Lets a cancel wake a request still waiting for a connection."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._connection_pool = pool
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self._connection_pool.wake()


class UpstreamTransport(httpx2.BaseTransport):
    """HTTP/2 and HTTP/1.1 on our connection pool; see the module docstring."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        http2: bool = True,
        http2_prior_knowledge: bool = False,
        max_connections: int = 20,
        max_keepalive_connections: int = 10,
        keepalive_expiry_s: float = 30.0,
        ping_interval_s: float = 5.0,
        ping_timeout_s: float = 5.0,
        write_timeout_s: float = 60.0,
    ) -> None:
        self.http2 = http2
        self.http2_prior_knowledge = http2_prior_knowledge
        context = tls_context(verify, http2=http2)
        self.pool = ConnectionPool(
            ssl_context=context,
            http2=http2,
            http2_prior_knowledge=http2_prior_knowledge,
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry_s=keepalive_expiry_s,
            limits=ConnectionLimits(
                ping_interval_s=ping_interval_s,
                ping_timeout_s=ping_timeout_s,
                write_timeout_s=write_timeout_s,
            ),
        )
        self._http11_origins: set[Origin] = set()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        origin = Origin.of(request.url)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        pending = _PendingRequest(self.pool)
        register_cancel(pending.cancel)
        if not self._speaks_http2(origin):
            return self._http11_request(request, origin, timeouts, pending)
        # The body is held whole: a refused stream is sent again on another connection,
        # which needs the same bytes, and the SDK's JSON bodies are bytes already.
        body = request.read()
        headers = _request_headers(request, origin)
        for attempt in range(_ATTEMPTS):
            opened = self.pool.open_stream(
                origin,
                headers,
                body,
                connect_timeout_s=timeouts.get("connect"),
                pool_timeout_s=timeouts.get("pool"),
                is_cancelled=lambda: pending.cancelled,
            )
            if not isinstance(opened, Http2Stream):
                # The server does not speak HTTP/2 (ALPN): remember, and use HTTP/1.1.
                with self._lock:
                    self._http11_origins.add(origin)
                return self._http11_request(request, origin, timeouts, pending, opened)
            stream = opened
            stream.read_timeout_s = timeouts.get("read")
            register_cancel(stream.cancel)
            try:
                if not stream.request_sent:
                    stream.connection.send_body(stream, body, timeouts.get("write"))
                stream.wait_headers(timeouts.get("read"))
            except StreamRefused:
                if attempt + 1 == _ATTEMPTS:
                    raise httpx2.RemoteProtocolError(
                        "the upstream refused the request on every connection"
                    ) from None
                continue
            except BaseException:
                stream.close()
                raise
            return httpx2.Response(
                stream.status,
                headers=stream.headers,
                stream=_ResponseBody(stream, timeouts.get("read")),
                extensions={"http_version": b"HTTP/2", UPSTREAM_STREAM: stream},
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _http11_request(
        self,
        request: httpx2.Request,
        origin: Origin,
        timeouts: dict[str, float | None],
        pending: _PendingRequest,
        opened: OpenedSocket | None = None,
    ) -> httpx2.Response:
        while True:
            connection = self.pool.http11_connection(
                origin,
                connect_timeout_s=timeouts.get("connect"),
                pool_timeout_s=timeouts.get("pool"),
                is_cancelled=lambda: pending.cancelled,
                opened=opened,
            )
            try:
                return connection.handle_request(request)
            except ConnectionNotAvailable:
                opened = None  # closed by the server while idle: take another

    def _speaks_http2(self, origin: Origin) -> bool:
        if not self.http2:
            return False
        if origin.scheme == "http" and not self.http2_prior_knowledge:
            return False
        return origin not in self._http11_origins

    def close(self) -> None:
        self.pool.close()


def _request_headers(request: httpx2.Request, origin: Origin) -> list[tuple[bytes, bytes]]:
    authority = request.headers.get("host")
    headers = [
        (b":method", request.method.encode("ascii")),
        (b":authority", authority.encode("ascii") if authority else origin.authority),
        (b":scheme", origin.scheme.encode("ascii")),
        (b":path", request.url.raw_path),
    ]
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered in _NOT_FORWARDED or (lowered == b"te" and value.lower() != b"trailers"):
            continue
        headers.append((lowered, value))
    return headers


def shutdown_response(response: Any) -> None:
    """Best-effort cancel of an HTTP/1.1 response from a transport that is not ours: shut its
    socket down so a read blocked on it returns. HTTP/2 sockets are shared and are left alone;
    such a stream stops when its worker next gets data."""
    if getattr(response, "http_version", "") == "HTTP/2":
        return
    network_stream = response.extensions.get("network_stream")
    if network_stream is None:
        return
    sock = network_stream.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)
