"""Regression: a graceful GOAWAY must let the streams it covers finish (RFC 9113 §6.8).

A client that fails every stream still open on a connection once the server sends GOAWAY, even
with NO_ERROR, loses work whenever a server sheds connections gracefully — nginx does after
1,000 requests per connection, every server does on a graceful restart. The simulator
(hypercorn, python-h2) cannot send a graceful GOAWAY and keep streaming, so this test serves
HTTP/2 by hand: two streams get half their body, then GOAWAY (NO_ERROR, covering both), then
the rest; a request made afterwards must go to a new connection.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import pytest
from http11_server import LoopbackServer
from hyperframe.frame import GoAwayFrame

from backend_ai.streaming import PoolSettings, build_http_client


def _lingering_close(sock: socket.socket) -> None:
    """Close as servers do after GOAWAY: stop writing, then read until the client closes.

    Closing a socket with unread bytes in its receive buffer (the client's WINDOW_UPDATE or
    SETTINGS acknowledgement) makes the kernel send RST, and an RST discards what the client
    has not read yet, so the last DATA frames could vanish before the client sees them.
    """
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(5)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def _serve_streams(sock: socket.socket, send_goaway: bool) -> None:
    """The first two streams around a GOAWAY when ``send_goaway``; else every stream whole."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    waiting: list[int] = []
    open_streams = 0
    went_away = False
    with sock:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    waiting.append(event.stream_id)
                    open_streams += 1
            if (send_goaway and len(waiting) == 2) or (not send_goaway and waiting):
                for stream_id in waiting:
                    conn.send_headers(stream_id, [(":status", "200")])
                    conn.send_data(stream_id, b"first half;")
                sock.sendall(conn.data_to_send())
                if send_goaway:
                    # Written by hand: h2 would refuse to send anything after its GOAWAY.
                    goaway = GoAwayFrame(0, last_stream_id=max(waiting), error_code=0)
                    sock.sendall(goaway.serialize())
                    went_away = True
                for stream_id in waiting:
                    conn.send_data(stream_id, b"second half", end_stream=True)
                    open_streams -= 1
                waiting = []
            sock.sendall(conn.data_to_send())
            if went_away and open_streams == 0:
                _lingering_close(sock)
                return


@pytest.fixture
def goaway_server() -> Iterator[LoopbackServer]:
    """Serves the first connection's two streams around a GOAWAY; later connections normally."""
    connections = itertools.count()
    server = LoopbackServer(lambda sock: _serve_streams(sock, next(connections) == 0))
    yield server
    server.close()


def test_streams_covered_by_a_graceful_goaway_finish_and_later_requests_reconnect(
    goaway_server: LoopbackServer,
) -> None:
    client = build_http_client(PoolSettings(http2_prior_knowledge=True))
    url = f"http://127.0.0.1:{goaway_server.port}/"
    bodies: dict[int, bytes | BaseException] = {}

    def fetch(index: int) -> None:
        try:
            with client.stream("GET", url) as response:
                bodies[index] = response.read()
        except Exception as exc:  # recorded and asserted on below
            bodies[index] = exc

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(2)]
    with client:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert bodies == {0: b"first half;second half", 1: b"first half;second half"}

        after = client.get(url)
        assert after.content == b"first half;second half"
    assert goaway_server.accepted == 2
    assert goaway_server.errors == []
