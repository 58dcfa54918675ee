"""The pool of upstream connections, per origin, and the housekeeper that keeps them.

A request takes a stream on an open connection of its origin that has room (the server's
``MAX_CONCURRENT_STREAMS``, which may change at any time); when none has, it opens a new
connection up to ``max_connections``, or waits until a stream ends or a connection goes.
While a connection is being opened, other requests for that origin wait for it rather than
each opening their own: HTTP/2 carries them all. HTTP/1.1 connections (``http11.py``) carry
one request at a time; idle ones wait in ``IdleConnections`` for the next request of their
origin. Both kinds count against ``max_connections``.

One housekeeper thread per pool wakes a few times a second: it pings connections that heard
nothing for a while and closes those whose PING goes unanswered (a dead peer otherwise looks
like a quiet one), closes idle connections after ``keepalive_expiry_s``, and enforces the
read deadlines of streams fed on the reader thread (nobody else is waiting on them).
"""

from __future__ import annotations

import enum
import ssl
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import httpx2

from backend_ai.streaming.http2 import (
    ConnectionLimits,
    Http2Connection,
    Http2Stream,
    RequestCancelled,
)
from backend_ai.streaming.http11 import HTTP11Connection, IdleConnections
from backend_ai.streaming.sockets import OpenedSocket, Origin, open_socket

__all__ = ["ConnectionPool"]

_T = TypeVar("_T")


class _Connect(enum.Enum):
    """A claim on the right to open a new connection (counted in the pool already)."""

    CONNECT = "connect"


_CONNECT = _Connect.CONNECT

_HOUSEKEEPING_TICK_S = 0.1


class ConnectionPool:
    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        http2: bool,
        http2_prior_knowledge: bool,
        max_connections: int,
        max_keepalive_connections: int,
        keepalive_expiry_s: float,
        limits: ConnectionLimits,
    ) -> None:
        self._ssl_context = ssl_context
        self._http2 = http2
        self._prior_knowledge = http2_prior_knowledge
        self.max_connections = max_connections
        self.max_keepalive_connections = max_keepalive_connections
        self._keepalive_expiry_s = keepalive_expiry_s
        self._limits = limits
        # Re-entrant: a connection that fails while a stream is being opened on it (under
        # this lock) reports the change at once, on the same thread.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._connections: dict[Origin, list[Http2Connection]] = {}
        self._connecting: set[Origin] = set()
        self._opening = 0
        self._http11_open = 0
        self._idle11 = IdleConnections(
            max_idle=max_keepalive_connections, on_close=self._http11_closed
        )
        self._closed = False
        self._housekeeper: threading.Thread | None = None
        self._stop = threading.Event()

    # -- taking a stream -----------------------------------------------------------------

    def open_stream(
        self,
        origin: Origin,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        connect_timeout_s: float | None,
        pool_timeout_s: float | None,
        is_cancelled: Callable[[], bool],
    ) -> Http2Stream | OpenedSocket:
        """A stream on a connection to ``origin`` with its headers sent, and its body too when
        it fits in one frame (``Http2Connection.try_open``) — or, when the server speaks only
        HTTP/1.1, the connected socket for the caller's HTTP/1.1 path."""

        def attempt() -> Http2Stream | _Connect | None:
            for connection in self._connections.get(origin, ()):
                stream = connection.try_open(headers, body)
                if stream is not None:
                    return stream
            if origin not in self._connecting and self._count() < self.max_connections:
                self._connecting.add(origin)
                self._opening += 1
                return _CONNECT
            return None

        claimed = self._claim(attempt, pool_timeout_s, is_cancelled)
        if claimed is not _CONNECT:
            assert isinstance(claimed, Http2Stream)
            claimed.connection.flush()  # outside the pool's lock (see ``try_open``)
            return claimed
        try:
            opened = open_socket(
                origin,
                ssl_context=self._ssl_context,
                http2=self._http2,
                http2_prior_knowledge=self._prior_knowledge,
                timeout_s=connect_timeout_s,
            )
        except BaseException:
            with self._changed:
                self._connecting.discard(origin)
                self._opening -= 1
                self._changed.notify_all()
            raise
        if not opened.http2:
            with self._changed:
                self._connecting.discard(origin)
                self._opening -= 1
                self._http11_open += 1  # handed to ``http11_connection`` next
                self._changed.notify_all()
            return opened
        try:
            connection = Http2Connection(
                opened.sock,
                authority=origin.authority,
                scheme=origin.scheme.encode(),
                limits=self._limits,
                on_change=self._notify,
            )
        finally:
            with self._changed:
                self._connecting.discard(origin)
                self._opening -= 1
                self._changed.notify_all()
        with self._changed:
            self._connections.setdefault(origin, []).append(connection)
            self._start_housekeeper()
            self._changed.notify_all()
            stream = connection.try_open(headers, body)
        if stream is None:  # refused at once (a zero stream limit): wait like everyone else
            return self.open_stream(
                origin,
                headers,
                body,
                connect_timeout_s=connect_timeout_s,
                pool_timeout_s=pool_timeout_s,
                is_cancelled=is_cancelled,
            )
        connection.flush()
        return stream

    def _claim(
        self,
        attempt: Callable[[], _T | _Connect | None],
        pool_timeout_s: float | None,
        is_cancelled: Callable[[], bool],
    ) -> _T | _Connect:
        """Run ``attempt`` under the pool's lock until it claims something (a stream, an idle
        connection, or the right to open a connection), waiting for a change in between."""
        deadline = None if pool_timeout_s is None else time.monotonic() + pool_timeout_s
        with self._changed:
            while True:
                if self._closed:
                    raise httpx2.ConnectError("the connection pool is closed")
                if is_cancelled():
                    raise RequestCancelled("the request was cancelled")
                claimed = attempt()
                if claimed is not None:
                    return claimed
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise httpx2.PoolTimeout("no upstream connection became free in time")
                self._changed.wait(0.5 if remaining is None else min(remaining, 0.5))

    def _count(self) -> int:
        return self._opening + self._http11_open + sum(len(c) for c in self._connections.values())

    # -- HTTP/1.1 ------------------------------------------------------------------------

    def http11_connection(
        self,
        origin: Origin,
        *,
        connect_timeout_s: float | None,
        pool_timeout_s: float | None,
        is_cancelled: Callable[[], bool],
        opened: OpenedSocket | None = None,
    ) -> HTTP11Connection:
        """An idle keep-alive connection to ``origin``, or a new one (``opened``, when the
        caller already connected and learned that the server speaks only HTTP/1.1)."""
        if opened is None:

            def attempt() -> HTTP11Connection | _Connect | None:
                idle = self._idle11.take(origin)
                if idle is not None:
                    return idle
                if self._count() < self.max_connections:
                    self._http11_open += 1
                    return _CONNECT
                return None

            claimed = self._claim(attempt, pool_timeout_s, is_cancelled)
            if claimed is not _CONNECT:
                assert isinstance(claimed, HTTP11Connection)
                return claimed
            try:
                opened = open_socket(
                    origin,
                    ssl_context=self._ssl_context,
                    http2=False,
                    http2_prior_knowledge=False,
                    timeout_s=connect_timeout_s,
                )
            except BaseException:
                self._http11_closed(None)
                raise
        return HTTP11Connection(
            opened.sock,
            origin,
            keepalive_expiry=self._keepalive_expiry_s,
            on_release=self._http11_released,
        )

    def _http11_released(self, connection: HTTP11Connection, reusable: bool) -> None:
        if reusable and not self._closed:
            self._idle11.put(connection, reusable)  # closes it (and counts) if it has no room
        else:
            connection.close()
            self._http11_closed(connection)
        self._notify()

    def _http11_closed(self, connection: HTTP11Connection | None) -> None:
        with self._changed:
            self._http11_open -= 1
            self._changed.notify_all()

    def _notify(self) -> None:
        """A connection's capacity or state changed: waiting requests look again."""
        with self._changed:
            self._changed.notify_all()

    def wake(self) -> None:
        self._notify()

    # -- housekeeping --------------------------------------------------------------------

    def _start_housekeeper(self) -> None:
        if self._housekeeper is None:
            self._housekeeper = threading.Thread(
                target=self._housekeep, name="h2-pool-housekeeper", daemon=True
            )
            self._housekeeper.start()

    def _housekeep(self) -> None:
        while not self._stop.wait(_HOUSEKEEPING_TICK_S):
            now = time.monotonic()
            with self._lock:
                connections = [c for group in self._connections.values() for c in group]
            for connection in connections:
                connection.housekeep(now)
            self._prune(now)
            self._idle11.prune()

    def _prune(self, now: float) -> None:
        """Drop failed connections, drained ones, and idle ones past their keep-alive."""
        closing: list[Http2Connection] = []
        with self._changed:
            for origin, group in list(self._connections.items()):
                kept: list[Http2Connection] = []
                for connection in group:
                    idle_since = connection.idle_since
                    if connection.closed:
                        continue
                    if (
                        connection.active_streams == 0
                        and idle_since is not None
                        and (not connection.usable or now - idle_since >= self._keepalive_expiry_s)
                    ):
                        closing.append(connection)
                        continue
                    kept.append(connection)
                if kept:
                    self._connections[origin] = kept
                else:
                    del self._connections[origin]
            idle_kept = [
                c
                for group in self._connections.values()
                for c in group
                if c.active_streams == 0 and c.idle_since is not None
            ]
            for connection in idle_kept[self.max_keepalive_connections :]:
                closing.append(connection)
                self._connections[_origin_of(self._connections, connection)].remove(connection)
            if closing:
                self._changed.notify_all()
        for connection in closing:
            connection.close()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            connections = [c for group in self._connections.values() for c in group]
            self._connections.clear()
            self._changed.notify_all()
        self._stop.set()
        self._idle11.close()
        for connection in connections:
            connection.close()
        if self._housekeeper is not None and self._housekeeper is not threading.current_thread():
            self._housekeeper.join(timeout=2)


def _origin_of(connections: dict[Origin, list[Http2Connection]], item: Http2Connection) -> Origin:
    for origin, group in connections.items():
        if item in group:
            return origin
    raise LookupError("connection not in the pool")
