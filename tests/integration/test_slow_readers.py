"""Clients that stop reading cannot pin the service: a real gunicorn, 100 such clients.

The server's socket buffers are made small (``SO_SNDBUF`` on the listening socket, inherited
by every accepted one) and so are the clients' (``SO_RCVBUF``), so a response fills them
within a few kilobytes and gunicorn's ``sendall`` blocks, as it would behind a real slow
network with a long response. The send timeout is 1 s for the test and the run's own
backpressure timeout 120 s: if the send timeout did not free the threads, the watchdogs here
(well under 120 s) fail the test.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from backend_ai.app.gunicorn_process import GunicornProcess, listen
from backend_ai.simulator import SimulatorProcess
from tests.support.protocol import check_protocol
from tests.support.sse import LiveStream, parse_frames

from .conftest import service_env

SLOW_CLIENTS = 100
THREADS = 32
SMALL_BUFFER = 4096
ACTIVE = re.compile(r"^backend_ai_active_streams (\S+)$", re.M)


def slow_client(port: int) -> socket.socket:
    """Sends a long streaming request, then never reads."""
    body = json.dumps(
        {"question": "x", "sim": {"ttft_ms": 0, "itl_ms": 0, "tokens": 800, "jitter": 0}}
    ).encode()
    head = (
        "POST /tarot/single-card-stream HTTP/1.1\r\nHost: test\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    sock.connect(("127.0.0.1", port))
    sock.sendall(head + body)
    return sock


def active_streams(http: httpx.Client) -> float:
    match = ACTIVE.search(http.get("/metrics").text)
    assert match is not None
    return float(match.group(1))


def dropped_by_server(sock: socket.socket) -> bool:
    """Reads what is left; True if the server ended the connection (reset or end of data)."""
    sock.settimeout(10.0)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@pytest.mark.slow
def test_clients_that_stop_reading_are_dropped_and_every_thread_comes_back(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    listener = listen("127.0.0.1", 0)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    env = service_env(
        simulator,
        tmp_path,
        BACKEND_AI_SEND_TIMEOUT_S="1",
        BACKEND_AI_BACKPRESSURE_TIMEOUT_S="120",
        BACKEND_AI_QUEUE_SIZE="16",
    )
    server = GunicornProcess(workers=1, threads=THREADS, env=env, listener=listener)
    with server, httpx.Client(base_url=server.url or "", timeout=60) as http:
        port = int(httpx.URL(server.url or "").port or 0)
        slow = [slow_client(port) for _ in range(SLOW_CLIENTS)]
        try:
            # Another client, while the slow ones hold (or queue for) every thread.
            answer: dict[str, object] = {}

            def other_client() -> None:
                sim = {"ttft_ms": 0, "itl_ms": 1, "tokens": 20}
                response = httpx.post(
                    f"{server.url}dream/interpret-stream",
                    json={"dream": "x", "sim": sim},
                    timeout=60,
                )
                answer["frames"] = parse_frames(response.text)
                answer["at"] = time.monotonic()

            other = threading.Thread(target=other_client)
            other.start()
            other.join(60)
            assert not other.is_alive(), "another client got no answer during the storm"
            check_protocol(answer["frames"])  # type: ignore[arg-type]

            deadline = time.monotonic() + 60
            while active_streams(http) > 0:
                assert time.monotonic() < deadline, "slow readers still hold request threads"
                time.sleep(0.1)
            assert all(dropped_by_server(sock) for sock in slow)
        finally:
            for sock in slow:
                sock.close()

        # Every thread is back: THREADS streams at once all start without waiting for a
        # thread. A request that had to wait would wait for a whole stream of another, so for
        # longer than the upstream's time to first token.
        ttft_s = 3.0
        sim = {"ttft_ms": ttft_s * 1000, "itl_ms": 0, "tokens": 1, "jitter": 0}
        waits: list[float] = []

        def probe() -> None:
            sent = time.perf_counter()
            with (
                httpx.Client(timeout=60) as client,
                client.stream(
                    "POST",
                    f"{server.url}tarot/single-card-stream",
                    json={"question": "x", "sim": sim},
                ) as response,
            ):
                frames = LiveStream(response, sent).read_all()
            check_protocol(frames)
            waits.append(next(f.at for f in frames if f.type == "start") - sent)

        probes = [threading.Thread(target=probe) for _ in range(THREADS)]
        for thread in probes:
            thread.start()
        for thread in probes:
            thread.join(60)
        assert len(waits) == THREADS
        assert max(waits) < ttft_s, f"a request waited {max(waits):.2f} s for a thread"

    log = "".join(server.log_lines)
    cancelled = re.findall(r"path=/tarot/single-card-stream .* outcome=cancelled", log)
    assert len(cancelled) == SLOW_CLIENTS
    assert log.count("dropped a client that read nothing") == SLOW_CLIENTS
    assert "Traceback" not in log
