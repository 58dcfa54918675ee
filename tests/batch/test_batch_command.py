"""``backend-ai batch`` as a user runs it: a real child process against the simulator.

The crash test kills the command with SIGKILL in the middle of a run and reruns it: every id
must then appear exactly once, each line whole. Ctrl-C must stop cleanly (exit 130, upstream
streams closed, resume instructions), and the progress bar is read from a real pty.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest

from backend_ai.batch_io import Journal
from tests.support.waiting import wait_until

API_KEY = "sk-test-batch-7c3e1a"


def write_input(path: Path, count: int, *, sim: dict[str, Any] | None = None) -> list[str]:
    """``count`` lines, alternating the Batch API form and the plain form."""
    ids = []
    with path.open("w") as handle:
        for n in range(count):
            item_id = f"item-{n:04d}"
            ids.append(item_id)
            if n % 2:
                body: dict[str, Any] = {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"Question number {n}"}],
                    "max_tokens": 50,
                }
                if sim:
                    body["sim"] = sim
                line = {
                    "custom_id": item_id,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
            else:
                line = {"id": item_id, "prompt": f"Question number {n}"}
            handle.write(json.dumps(line) + "\n")
    return ids


def command(simulator, input_path: Path, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "backend_ai.cli",
        "batch",
        str(input_path),
        "-o",
        str(output),
        *extra,
    ]


def start_batch(
    simulator,
    input_path: Path,
    output: Path,
    *extra: str,
    stderr: Any = subprocess.PIPE,
    text=False,
) -> subprocess.Popen[Any]:
    """``backend-ai batch`` started in the background; the test stops it."""
    return subprocess.Popen(
        command(simulator, input_path, output, *extra),
        env=env_for(simulator),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=text,
    )


def run_batch(
    simulator, input_path: Path, output: Path, *extra: str, env=None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``backend-ai batch`` to its end, its output captured as text."""
    return subprocess.run(
        command(simulator, input_path, output, *extra),
        env=env_for(simulator) if env is None else env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def env_for(simulator) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OPENAI_BASE_URL=simulator.base_url,
        OPENAI_API_KEY=API_KEY,
        BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE="1",
    )
    return env


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def check_complete(output: Path, ids: list[str]) -> None:
    raw = output.read_bytes()
    assert raw.endswith(b"\n")
    results = [json.loads(line) for line in raw.decode().splitlines()]
    seen = [r["id"] for r in results]
    assert sorted(seen) == sorted(ids), "every id exactly once"
    for result in results:
        assert result["error"] is None, result
        assert result["finish_reason"] in ("stop", "length")
        assert result["text"]
        assert result["usage"]["completion_tokens"] >= 1


def test_sigkill_mid_run_then_rerun_gives_every_id_exactly_once(tmp_path, simulator):
    simulator.configure(defaults={"ttft_ms": 40, "itl_ms": 4, "tokens": 15})
    input_path, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(input_path, 240)
    child = start_batch(simulator, input_path, output, "--concurrency", "6")
    try:
        wait_until(lambda: len(lines_of(output)) >= 40, timeout=60)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    first = len(lines_of(output))
    assert 40 <= first < 240, "killed in the middle of the run"
    # A torn last line, as a crash inside a write could leave one.
    with output.open("ab") as handle:
        handle.write(b'{"id":"item-0239","text":"half a li')
    rerun = run_batch(simulator, input_path, output, "--concurrency", "6")
    assert rerun.returncode == 0, rerun.stderr
    assert "incomplete last line" in rerun.stderr
    assert f"{first} items already done" in rerun.stderr
    check_complete(output, ids)


def test_ctrl_c_stops_cleanly_cancels_upstream_and_says_how_to_resume(tmp_path, simulator):
    simulator.configure(defaults={"ttft_ms": 200, "itl_ms": 50, "tokens": 40})
    input_path, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(input_path, 60)
    child = start_batch(simulator, input_path, output, "--concurrency", "8", text=True)
    try:
        wait_until(lambda: len(lines_of(output)) >= 3, timeout=60)
        wait_until(lambda: simulator.stats(records=False)["streams_active"] >= 4, timeout=10)
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    # What was in flight was cancelled upstream, not left streaming.
    wait_until(lambda: simulator.stats(records=False)["streams_active"] == 0, timeout=5)
    assert simulator.stats(records=False)["disconnects"]
    kept = lines_of(output)
    assert 3 <= len(kept) < 60
    for line in kept:
        assert json.loads(line)["error"] is None
    simulator.configure(defaults={"ttft_ms": 5, "itl_ms": 1, "tokens": 5})
    rerun = run_batch(simulator, input_path, output, "--concurrency", "8")
    assert rerun.returncode == 0, rerun.stderr
    check_complete(output, ids)


def test_bad_lines_are_reported_with_their_number_and_the_rest_goes_on(tmp_path, simulator):
    input_path, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    input_path.write_text(
        '{"id": "one", "prompt": "first"}\n'
        "this is not json\n"
        '{"custom_id": "two", "url": "/v1/embeddings", "body": {"input": "x"}}\n'
        "\n"
        '{"id": "three", "prompt": "third"}\n'
        '{"id": "one", "prompt": "again"}\n'
    )
    done = run_batch(simulator, input_path, output, timeout=60)
    assert done.returncode == 1  # some input was bad
    assert "line 2:" in done.stderr
    assert "line 3: url must be /v1/chat/completions" in done.stderr
    assert "line 6: id 'one' appears earlier" in done.stderr
    assert sorted(json.loads(x)["id"] for x in lines_of(output)) == ["one", "three"]


def test_the_progress_bar_is_drawn_on_a_terminal(tmp_path, simulator):
    simulator.configure(defaults={"ttft_ms": 30, "itl_ms": 3, "tokens": 10})
    input_path, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(input_path, 80)
    master, slave = pty.openpty()
    # A terminal has a size (a fresh pty reports 0 x 0).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    child = start_batch(simulator, input_path, output, "--concurrency", "4", stderr=slave)
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed its end
                    break
                if not data:
                    break
                screen += data
            elif child.poll() is not None:
                break
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        os.close(master)
    text = screen.decode(errors="replace")
    assert child.returncode == 0, text
    assert "100%" in text
    assert "80/80" in text
    assert "item/s" in text
    assert "ok=" in text
    assert "failed=" in text
    assert "tokens=" in text
    # Redrawn in place, not one line per update.
    assert text.count("\r") >= 2


def test_journal_drops_only_a_partial_last_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id":"a","text":"x"}\n{"id":"b","text":"y"}\n{"id":"c","te')
    journal = Journal(str(path))
    journal.close()
    assert journal.done_ids == {"a", "b"}
    assert journal.dropped_partial == len(b'{"id":"c","te')
    assert path.read_bytes().endswith(b'"y"}\n')


def test_a_missing_input_file_is_a_usage_error(tmp_path, simulator):
    done = run_batch(simulator, tmp_path / "nope.jsonl", tmp_path / "out.jsonl", timeout=60)
    assert done.returncode == 2
    assert "no such input file" in done.stderr


@pytest.mark.parametrize("with_budget", [True, False])
def test_rpm_keeps_the_command_within_the_upstream_budget(tmp_path, simulator, with_budget):
    simulator.configure(
        defaults={"ttft_ms": 5, "itl_ms": 1, "tokens": 3},
        budget={"rpm_per_key": 5, "window_s": 1.0},
    )
    input_path, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(input_path, 14)
    budget = ["--rpm", "5", "--budget-window-s", "1"] if with_budget else []
    done = run_batch(simulator, input_path, output, "--concurrency", "8", *budget)
    assert done.returncode == 0, done.stderr
    check_complete(output, ids)  # either way every item gets through
    statuses = [r["status"] for r in simulator.stats()["requests"]]
    assert statuses.count(200) == 14
    if with_budget:
        assert 429 not in statuses
    else:
        assert 429 in statuses


def test_with_a_redis_url_the_command_waits_on_the_budget_the_service_shares(
    tmp_path, simulator, redis_server
):
    from backend_ai.streaming.budget import Permit, TokenEstimate
    from backend_ai.streaming.redis_budget import RedisRateBudget

    window_s = 5.0
    input_path, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(input_path, 2)  # both lines ask for gpt-4o-mini
    # Another process (a service worker) has spent gpt-4o-mini's three starts of the window.
    other = RedisRateBudget(
        redis_server.url,
        upstream=simulator.base_url + "/",
        model="gpt-4o-mini",
        rpm=3,
        window_s=window_s,
    )
    try:
        for _ in range(3):
            assert isinstance(other.try_acquire(TokenEstimate(1, 1, 4, "gpt-4o-mini")), Permit)
        env = env_for(simulator)
        env["BACKEND_AI_REDIS_URL"] = redis_server.url
        done = run_batch(
            simulator,
            input_path,
            output,
            "--rpm",
            "3",
            "--budget-window-s",
            "5",
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        check_complete(output, ids)
        shared = other.snapshot()
    finally:
        other.close()
    assert shared["store"] == "redis"
    assert shared["admitted"] == 3 + 2  # the command's starts were counted in the same window
    assert shared["waits"] >= 1  # and it was made to wait for the other process's ones to leave
