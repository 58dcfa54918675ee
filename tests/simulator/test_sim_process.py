"""Starting and stopping the simulator: context manager, CLI, failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import httpx
import pytest

from backend_ai.errors import LifecycleError, SimulatorError
from backend_ai.simulator import SimKeyError, SimulatorProcess, client_ssl_context, run_simulator


def test_run_simulator_starts_answers_and_reaps_the_child():
    with run_simulator(ttft_ms=0, itl_ms=0, tokens=3) as sim:
        proc = sim._proc
        assert proc is not None
        assert sim.base_url == f"{sim.origin}/v1"
        assert sim.ca_cert_path is None
        response = httpx.post(
            f"{sim.base_url}/chat/completions",
            headers={"Authorization": "Bearer k"},
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        )
        assert response.json()["usage"]["completion_tokens"] == 3
    assert proc.returncode is not None, "the child was waited for: no zombie"
    with pytest.raises(LifecycleError):
        sim.stats()
    sim.close()  # safe twice


def test_bad_default_key_fails_in_the_caller():
    with pytest.raises(SimKeyError, match="ttft"):
        SimulatorProcess(ttft=300)
    with pytest.raises(SimKeyError, match="rps"):
        SimulatorProcess(budget={"rps": 3})


def test_child_that_cannot_start_raises_simulator_error():
    sim = SimulatorProcess(host="203.0.113.1")  # TEST-NET address: not ours to bind
    with pytest.raises(SimulatorError, match="exited with code"):
        sim.start()
    with pytest.raises(LifecycleError):
        sim.start()


def test_child_exits_when_its_parent_goes_away():
    with run_simulator() as sim:
        proc = sim._proc
        assert proc is not None
        assert proc.stdin is not None
        proc.stdin.close()  # what the kernel does when the parent dies
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize(
    "command", [["backend_ai.simulator"], ["backend_ai.cli", "simulate"]], ids=["module", "cli"]
)
def test_cli_prints_the_base_url_and_stops_on_sigterm(command):
    proc = subprocess.Popen(
        [sys.executable, "-m", *command, "--port", "0", "--profile", "fast"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("backend-ai simulator listening on http://127.0.0.1:")
        base_url = line.split()[-1]
        assert base_url.endswith("/v1")
        models = httpx.get(f"{base_url}/models", headers={"Authorization": "Bearer k"})
        assert models.status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        if proc.stdout is not None:
            proc.stdout.close()


def test_cli_json_announcement_with_tls(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backend_ai.simulator",
            "--port=0",
            "--tls",
            f"--tls-dir={tmp_path}",
            "--announce=json",
            "--tokens=4",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["base_url"].startswith("https://127.0.0.1:")
        assert info["ca_cert_path"] == str(tmp_path / "ca.pem")
        verify = client_ssl_context(info["ca_cert_path"])
        config = httpx.get(f"{info['origin']}/_sim/config", verify=verify).json()
        assert config["defaults"]["tokens"] == 4
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_forked_child_does_not_stop_the_parents_simulator():
    with run_simulator() as sim:
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() in a process with threads; the child execs nothing.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child only closes its copy and leaves
            sim.close()
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        assert sim.stats()["requests_total"] == 0, "still running after the fork's close()"
