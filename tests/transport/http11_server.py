"""Small loopback HTTP/1.1 servers for the HTTP/1.1 connection's tests.

Each accepted connection runs a handler on its own thread; requests are parsed with ``h11``'s
server role, and responses are written as raw bytes so a test can send anything at all (cut
bodies, huge heads, stalls). Handler failures are collected, not lost in a thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

import h11
import httpx2

from backend_ai.streaming.http11 import (
    HTTP11Connection,
    ReleaseCallback,
    url_origin_key,
)

#: How long anything in these tests may wait for the other side before failing.
WATCHDOG_S = 10.0


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: httpx2.URL) -> Origin:
        return cls(*url_origin_key(url))


Handler = Callable[[socket.socket], None]


class LoopbackServer:
    """A loopback server running ``handler(sock)`` for each accepted connection on a thread."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.accepted = 0
        self.errors: list[BaseException] = []
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        accepting = threading.Thread(target=self._accept, daemon=True)
        accepting.start()
        self._threads.append(accepting)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._sockets.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(WATCHDOG_S)
        try:
            self._handler(sock)
        except BaseException as exc:  # surfaced by the test, not lost in a thread
            self.errors.append(exc)

    @property
    def origin(self) -> Origin:
        return Origin("http", "127.0.0.1", self.port)

    def connect(self, on_release: ReleaseCallback | None = None) -> HTTP11Connection:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=WATCHDOG_S)
        return HTTP11Connection(sock, self.origin, on_release=on_release)

    def close(self) -> None:
        # A shutdown, not just a close, wakes the threads blocked in accept() or recv().
        for sock in (self._listener, *self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=WATCHDOG_S)
        for sock in (self._listener, *self._sockets):
            sock.close()


def receive_request(sock: socket.socket) -> tuple[h11.Request, bytes] | None:
    """Read one request with ``h11``'s server role; None if the client closed first."""
    parser = h11.Connection(h11.SERVER)
    request: h11.Request | None = None
    body: list[bytes] = []
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            parser.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request, b"".join(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None


def wait_for_eof(sock: socket.socket) -> bytes:
    """Read until the client closes (or shuts down) its end; what it sent meanwhile."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def hang_up(sock: socket.socket) -> None:
    """End the connection from the server's side (the client may have closed it already)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def respond(sock: socket.socket, body: bytes, *headers: str) -> None:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *headers]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)


@contextlib.contextmanager
def loopback_servers() -> Iterator[Callable[[Handler], LoopbackServer]]:
    """Start servers with the yielded function; all are closed, and their handlers' errors
    raised, on exit."""
    servers: list[LoopbackServer] = []

    def start(handler: Handler) -> LoopbackServer:
        server = LoopbackServer(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
    errors = [error for server in servers for error in server.errors]
    if errors:
        raise AssertionError(f"a server handler failed: {errors!r}")
