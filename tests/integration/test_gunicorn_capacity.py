"""One gunicorn worker with the shipped settings runs far more streams at once than an even share.

A gthread worker accepts a connection whether or not it has a free request thread, and the
kernel does not spread connections evenly over gunicorn's workers: one worker may end up with
most of a machine's streams. Those beyond its threads wait, with nothing to show for it, until
some other stream ends. So the shipped thread count must let one worker carry about what the
whole machine can; this test gives a single worker ``STREAMS`` streams at once and checks that
they all run together. Beyond its threads a worker cannot help the wait, but it can say so: the
second test checks the warning and the counter when its last thread takes a stream.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from backend_ai.app.gunicorn_process import GunicornProcess
from backend_ai.simulator import SimulatorProcess
from tests.reliability.helpers import RawClient
from tests.support.waiting import wait_until

from .conftest import DREAM, service_env

#: More than two workers' even share of the two-core machine's measured capacity (~150).
STREAMS = 100
#: Each section lasts about 8 s: a stream that had to wait for a thread would start only after
#: another ended, so all of them open at once cannot be a stream that waited.
LONG = {"ttft_ms": 50, "itl_ms": 200, "tokens": 40, "jitter": 0}
#: A watchdog only: on a machine where set-up is slow the streams are still open much longer.
WAIT_S = 30.0


def _metric(server: GunicornProcess, name: str) -> int:
    """A metric of the worker; -1 while it has no thread free to answer."""
    assert server.url is not None
    try:
        with httpx.Client(timeout=2.0) as http:
            text = http.get(server.url + "metrics").text
    except httpx.TimeoutException:
        return -1
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return int(sample.value)
    return 0


def _open_streams(server: GunicornProcess) -> int:
    return _metric(server, "backend_ai_active_streams")


def _open(server: GunicornProcess, count: int, sim: dict[str, float]) -> list[RawClient]:
    assert server.url is not None
    clients = []
    for i in range(count):
        client = RawClient(server.url, timeout=WAIT_S)
        client.send_post(DREAM, {"dream": f"dream {i}", "sim": sim})
        clients.append(client)
    return clients


def test_one_worker_runs_a_hundred_streams_at_once(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    with GunicornProcess(workers=1, env=service_env(simulator, tmp_path)) as server:
        assert server.url is not None
        clients: list[RawClient] = []
        try:
            clients = _open(server, STREAMS, LONG)
            seen: list[int] = []

            def all_open() -> bool:
                seen.append(_open_streams(server))
                return seen[-1] == STREAMS

            try:
                wait_until(all_open, WAIT_S, f"{STREAMS} streams open at once")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; open streams last seen: {seen[-5:]}") from None
            for client in clients:
                assert client.read_until(b"\r\n").split(b" ", 2)[1] == b"200"
        finally:
            for client in clients:
                client.close()


def test_a_worker_says_when_its_last_request_thread_takes_a_stream(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    threads = 4
    log_path = tmp_path / "gunicorn.log"
    with (
        log_path.open("w") as log,
        GunicornProcess(
            workers=1, threads=threads, env=service_env(simulator, tmp_path), output=log
        ) as server,
    ):
        clients: list[RawClient] = []
        try:
            clients = _open(server, threads - 1, LONG)
            wait_until(lambda: _open_streams(server) == threads - 1, WAIT_S, "streams open")
            assert "request threads" not in log_path.read_text()  # one thread still free
            clients += _open(server, 1, LONG)
            wait_until(
                lambda: f"all {threads} request threads" in log_path.read_text(),
                WAIT_S,
                "the warning in the worker's log",
            )
        finally:
            for client in clients:
                client.close()
        wait_until(lambda: _open_streams(server) == 0, WAIT_S, "the streams closed")
        assert _metric(server, "backend_ai_request_threads_full_total") == 1
