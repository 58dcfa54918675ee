"""HTTP/1.1 through the pooled client (``build_http_client``): the pool and the connection together.

``test_http11.py`` checks the connection's contract with a stand-in pool; here the real pool
keeps the connections, counts them against ``max_connections`` and sends a request again when
the server lost the keep-alive race. ``max_connections=1`` makes a connection the pool forgot
to count down show at once: the next request would wait for a free connection until its pool
timeout. Every assertion is on what the server saw, through public APIs only.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import httpx2
import pytest
from http11_server import (
    WATCHDOG_S,
    Handler,
    LoopbackServer,
    hang_up,
    loopback_servers,
    receive_request,
    respond,
    wait_for_eof,
)

from backend_ai.streaming import PoolSettings, build_http_client
from backend_ai.streaming.cancel import CancelScope

pytestmark = pytest.mark.timeout(30)

#: Also the pool timeout: a connection slot that leaked fails the next request after this.
TIMEOUT_S = 3.0


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], LoopbackServer]]:
    with loopback_servers() as start:
        yield start


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    settings = PoolSettings(max_connections=1, max_keepalive_connections=1, timeout_s=TIMEOUT_S)
    with build_http_client(settings) as client:
        yield client


def _echo_path(sock: socket.socket) -> None:
    while (received := receive_request(sock)) is not None:
        respond(sock, received[0].target)


def test_one_connection_carries_request_after_request(serve, client) -> None:
    server = serve(_echo_path)
    for path in ("a", "b", "c"):
        response = client.get(server.url + path)
        assert (response.http_version, response.content) == ("HTTP/1.1", b"/" + path.encode())
    assert server.accepted == 1


def test_a_kept_alive_connection_the_server_closed_meanwhile_is_replaced(serve, client) -> None:
    """Whether the pool sees the close before sending (the idle socket turned readable) or
    after (the keep-alive race), the request goes out once more on a new connection."""
    closed = threading.Event()

    def handler(sock: socket.socket) -> None:
        received = receive_request(sock)
        if received is not None:
            respond(sock, b"once")
        hang_up(sock)
        closed.set()

    server = serve(handler)
    assert client.get(server.url).content == b"once"
    assert closed.wait(WATCHDOG_S)
    assert client.get(server.url).content == b"once"
    assert server.accepted == 2


def test_a_request_that_lost_the_keep_alive_race_is_sent_again(serve, client) -> None:
    def handler(sock: socket.socket) -> None:
        assert receive_request(sock) is not None
        respond(sock, b"answered")
        receive_request(sock)  # the next request: hang up without a byte of answer
        hang_up(sock)

    server = serve(handler)
    assert client.post(server.url, content=b"first").content == b"answered"
    assert client.post(server.url, content=b"second").content == b"answered"
    assert server.accepted == 2


def test_errors_cancels_and_early_closes_free_the_connection_slot(serve, client) -> None:
    """Each request below ends its connection; with one slot, a leak fails the next one."""
    stalled = threading.Event()

    def handler(sock: socket.socket) -> None:
        received = receive_request(sock)
        if received is None:
            return
        path = received[0].target
        if path == b"/cut":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            hang_up(sock)
        elif path == b"/stall":
            stalled.set()
            wait_for_eof(sock)
        elif path == b"/long":
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            wait_for_eof(sock)
        else:
            respond(sock, b"fine")
            wait_for_eof(sock)

    server = serve(handler)
    with pytest.raises(httpx2.RemoteProtocolError):
        client.get(server.url + "cut")

    scope = CancelScope()
    canceller = threading.Thread(
        target=lambda: stalled.wait(WATCHDOG_S) and scope.cancel(), daemon=True
    )
    canceller.start()
    with scope, pytest.raises(httpx2.ReadError, match="cancelled"):
        client.get(server.url + "stall")
    canceller.join(WATCHDOG_S)

    with client.stream("GET", server.url + "long") as response:
        assert next(response.iter_raw()) == b"first"  # then closed before the end

    assert client.get(server.url + "last").content == b"fine"
    assert server.accepted == 4
