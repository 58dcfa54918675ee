"""The pooled client over HTTPS with ALPN ``h2``: one TLS connection that its reader thread
reads while many request threads write headers, bodies and window updates.

The server (``tls_servers.h2_echo``) answers each request with its path and its body, so every
byte of every request and response is checked; bodies are larger than the initial HTTP/2
windows, so WINDOW_UPDATE frames flow both ways while the streams run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import trustme
from http11_server import WATCHDOG_S, LoopbackServer
from tls_servers import client_context, h2_echo, server_context, tls_server

from backend_ai.streaming import PoolSettings, build_http_client

pytestmark = pytest.mark.timeout(120)
ROUNDS = 20


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def h2_server(ca: trustme.CA) -> Iterator[LoopbackServer]:
    server = tls_server(server_context(ca, num_tickets=4), h2_echo)
    yield server
    server.close()
    assert not server.errors, server.errors


def _body(index: int) -> bytes:
    rng = random.Random(index)
    return rng.randbytes(rng.choice([0, 1, 700, 70_000, 300_000, 600_000]))


def test_many_concurrent_streams_over_one_tls_connection_are_byte_exact(
    ca: trustme.CA, h2_server: LoopbackServer
) -> None:
    base = f"https://127.0.0.1:{h2_server.port}"
    settings = PoolSettings(timeout_s=WATCHDOG_S)
    with build_http_client(settings, verify=client_context(ca)) as client:

        def exchange(index: int) -> tuple[str, bytes]:
            path = f"/echo/{index}"
            if index % 2:
                response = client.post(base + path, content=_body(index))
                return response.http_version, response.content
            # Streamed, in small reads: window goes back as the consumer takes the data.
            with client.stream("POST", base + path, content=_body(index)) as response:
                content = b"".join(response.iter_bytes(chunk_size=4096))
            return response.http_version, content

        with ThreadPoolExecutor(max_workers=24, thread_name_prefix="request") as pool:
            results = list(pool.map(exchange, range(64)))

    for index, (version, content) in enumerate(results):
        assert version == "HTTP/2"
        assert content == f"/echo/{index}\n".encode() + _body(index), f"request {index}"
    assert h2_server.accepted == 1


def test_new_connections_stream_at_once_while_session_tickets_arrive(ca: trustme.CA) -> None:
    """Each round a new client's first requests go out on a connection whose reader may be
    taking in the server's TLS 1.3 session tickets at that very moment.

    This pins the behaviour through the whole client; it does not reliably fail over a shared
    ``SSLSocket`` (the race is narrow at this size). ``test_tls.py``'s session-ticket test,
    with many small writes, does.
    """
    server = tls_server(server_context(ca, num_tickets=16), h2_echo)
    base = f"https://127.0.0.1:{server.port}"
    try:
        for _ in range(ROUNDS):
            with build_http_client(
                PoolSettings(timeout_s=WATCHDOG_S), verify=client_context(ca)
            ) as client:

                def exchange(index: int) -> bytes:
                    return client.post(f"{base}/echo/{index}", content=_body(index)).content

                with ThreadPoolExecutor(max_workers=8, thread_name_prefix="request") as pool:
                    results = list(pool.map(exchange, range(8)))
            for index, content in enumerate(results):
                assert content == f"/echo/{index}\n".encode() + _body(index), f"request {index}"
    finally:
        server.close()
    assert not server.errors, server.errors
    assert server.accepted == ROUNDS
