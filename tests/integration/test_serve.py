"""``backend-ai serve`` end to end: the embedded simulator when no key is set, clean stops.

These run the real command in a child process, as a user would, with neither
``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL`` in its environment.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.process import descendants, free_port
from tests.support.protocol import check_protocol
from tests.support.sse import data_events, parse_frames

_READY = re.compile(r"embedded simulator \((http://[^)]+)\); open (http://\S+)")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Serve:
    """A running ``backend-ai serve`` and the lines it logged."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BACKEND_AI_"))}
        env["BACKEND_AI_HISTORY_DB"] = str(tmp_path / "history.sqlite3")
        self.port = free_port()
        command = [sys.executable, "-m", "backend_ai.cli", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "--workers", "1", "--threads", "8", *extra],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if match := pattern.search(line):
                return match
        raise AssertionError(f"serve never logged {pattern.pattern!r}:\n{''.join(self.log)}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    started = Serve(tmp_path)
    yield started
    started.close()


@pytest.mark.slow
def test_serve_without_a_key_runs_on_the_embedded_simulator_and_stops_cleanly(
    serve: Serve,
) -> None:
    match = serve.wait_for(_READY, timeout=60)
    page = match.group(2)
    assert page == f"http://127.0.0.1:{serve.port}/"
    assert sum("embedded simulator" in line for line in serve.log) == 1
    with httpx.Client(timeout=30) as http:
        html = http.get(page)
        assert html.status_code == 200
        assert "text/html" in html.headers["content-type"]
        assert http.get(page + "health").json()["upstream"] == "simulator"
        response = http.post(page + "dream/interpret-stream", json={"dream": "a lighthouse"})
    frames = parse_frames(response.text)
    texts = check_protocol(frames)
    done = data_events(frames)[-1]
    assert sorted(done["completed"]) == ["recommendations", "summary", "symbols"]
    assert all(texts.values())

    children = descendants(serve.proc.pid)
    assert len(children) >= 3  # simulator, gunicorn master, a worker
    serve.proc.send_signal(signal.SIGINT)
    assert serve.proc.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if alive(pid)], "serve left processes behind"


@pytest.mark.slow
def test_a_killed_serve_leaves_no_orphans(serve: Serve) -> None:
    serve.wait_for(_READY, timeout=60)
    children = descendants(serve.proc.pid)
    assert len(children) >= 3
    serve.proc.kill()  # no chance to clean up: the children must notice on their own
    serve.proc.wait()
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if alive(pid)], "orphans left after kill -9"


def refused_serve(*args: str, **env_vars: str) -> str:
    """Runs ``serve`` expecting a refusal: exit status 2, one line, nothing started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BACKEND_AI_"))}
    env.update(env_vars)
    result = subprocess.run(
        [sys.executable, "-m", "backend_ai.cli", "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("backend-ai serve: error: ")
    # The simulator and gunicorn would have logged (they start after every check).
    assert "simulator" not in result.stderr
    assert "gunicorn" not in result.stderr.lower()
    return lines[0]


def test_serve_refuses_bad_configuration(tmp_path: Path) -> None:
    line = refused_serve("--port", str(free_port()), BACKEND_AI_HEARTBEAT_S="soon")
    assert "BACKEND_AI_HEARTBEAT_S" in line


def test_serve_on_a_busy_port_is_one_line_and_exit_2() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        line = refused_serve("--port", str(port), "--no-history")
    assert f"port {port} on 127.0.0.1 is already in use" in line
    assert "--port" in line


def test_serve_refuses_a_history_file_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = refused_serve("--port", "0", "--history", str(blocker / "history.sqlite3"))
    assert "history" in line
    assert "--no-history" in line


def test_serve_refuses_an_impossible_port() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "backend_ai.cli", "serve", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "65535" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_serve_history_path_and_access_lines(tmp_path: Path) -> None:
    history = tmp_path / "chosen" / "readings.sqlite3"
    serve = Serve(tmp_path, "--history", str(history))
    try:
        page = serve.wait_for(_READY, timeout=60).group(2)
        serve.wait_for(re.compile(r"history: " + re.escape(str(history))), timeout=10)
        with httpx.Client(timeout=30) as http:
            response = http.post(page + "dream/interpret-stream", json={"dream": "SECRET-DREAM"})
            request_id = response.headers["X-Request-Id"]
            check_protocol(parse_frames(response.text))
            deadline = time.monotonic() + 10
            while not http.get(page + "history?limit=1").json()["readings"]:
                assert time.monotonic() < deadline, "the reading never reached the history"
                time.sleep(0.05)
        assert history.exists()
        serve.wait_for(
            re.compile(rf"request_id={request_id} path=/dream/interpret-stream .*outcome=ok"),
            timeout=10,
        )
        assert not any("SECRET-DREAM" in line for line in serve.log)
    finally:
        serve.close()


@pytest.mark.slow
def test_serve_without_history(tmp_path: Path) -> None:
    serve = Serve(tmp_path, "--no-history")
    try:
        page = serve.wait_for(_READY, timeout=60).group(2)
        serve.wait_for(re.compile(r"history: off"), timeout=10)
        with httpx.Client(timeout=30) as http:
            assert http.get(page + "health").json()["history"] is False
            assert http.get(page + "history").status_code == 404
        assert not (tmp_path / "history.sqlite3").exists()
    finally:
        serve.close()
