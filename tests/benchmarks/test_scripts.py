"""The scripts run as documented: the load test against the real service, the quick benchmark."""

from __future__ import annotations

import asyncio
import http.server
import itertools
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import benchmark_streaming_performance as bench_script
import load_test_streaming
import pytest
from benchmark.cli import build_parser as benchmark_parser
from load_test.cli import build_parser as load_test_parser
from load_test.client import Result, StreamChecker, run_load

from backend_ai.app import gunicorn_conf

ROOT = Path(__file__).resolve().parents[2]
FAST_UPSTREAM = json.dumps({"ttft_ms": 30, "itl_ms": 3, "tokens": 15, "jitter": 0})

# The command lines the documentation, CI and earlier results were written with, option by
# option, as the scripts accepted them before they became thin entry points to packages.
BENCHMARK_USAGE = (
    "usage: benchmark_streaming_performance.py [-h] [--quick] [--repeats REPEATS] "
    "[--only {fanout,ttfb,service,merge_cost,http,peers,timeline}] [--output OUTPUT] "
    "[--markdown MARKDOWN] [--timeline TIMELINE] [--no-langchain] [--no-write]"
)
BENCHMARK_DEFAULTS = {
    "markdown": None,
    "no_langchain": False,
    "no_write": False,
    "only": None,
    "output": None,
    "quick": False,
    "repeats": None,
    "timeline": None,
}
LOAD_TEST_USAGE = (
    "usage: load_test_streaming.py [-h] [--url URL] [--route {compare,dream,iching,tarot}] "
    "[--payload PAYLOAD] [--concurrent CONCURRENT] [--requests REQUESTS | --duration DURATION] "
    "[--timeout TIMEOUT] [--no-keepalive] [--ramp-s RAMP_S] "
    "[--upstream-ttft-ms UPSTREAM_TTFT_MS] [--spawn] "
    "[--server {backend,asgi-peer}] [--workers WORKERS] [--asgi-server {auto,uvicorn,hypercorn}] "
    "[--threads THREADS] [--sim SIM] [--sweep SWEEP] [--capacity-ms CAPACITY_MS] "
    "[--server-log SERVER_LOG] [--upstream-http1] [--upstream {simulator,paced}] "
    "[--upstream-cpu UPSTREAM_CPU] [--engine-tree ENGINE_TREE] [--json JSON] [--quiet]"
)
LOAD_TEST_DEFAULTS = {
    "asgi_server": "auto",
    "capacity_ms": 50.0,
    "concurrent": 10,
    "duration": None,
    "engine_tree": None,
    "json": None,
    "no_keepalive": False,
    "payload": None,
    "quiet": False,
    "ramp_s": 0.0,
    "requests": None,
    "route": "dream",
    "server": "backend",
    "server_log": None,
    "sim": None,
    "spawn": False,
    "sweep": None,
    "threads": gunicorn_conf.threads,
    "timeout": 120.0,
    "upstream": "simulator",
    "upstream_cpu": None,
    "upstream_http1": False,
    "upstream_ttft_ms": None,
    "url": "http://127.0.0.1:8000",
    "workers": 2,
}


@pytest.mark.parametrize(
    ("script", "usage"),
    [
        ("benchmark_streaming_performance.py", BENCHMARK_USAGE),
        ("load_test_streaming.py", LOAD_TEST_USAGE),
    ],
)
def test_entry_points_keep_their_command_lines(script, usage):
    """``python scripts/<script> --help`` run as documented, from the repository root."""
    out = subprocess.run(
        [sys.executable, f"scripts/{script}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert " ".join(out.split("\n\n")[0].split()) == usage


@pytest.mark.parametrize(
    ("parser", "defaults"),
    [(benchmark_parser, BENCHMARK_DEFAULTS), (load_test_parser, LOAD_TEST_DEFAULTS)],
    ids=["benchmark", "load_test"],
)
def test_entry_points_keep_their_defaults(parser, defaults):
    assert vars(parser().parse_args([])) == defaults


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("server", ["backend", "asgi-peer:hypercorn"])
def test_load_test_spawns_and_verifies_every_chunk(tmp_path, capsys, server):
    server, _, asgi_server = server.partition(":")
    out = tmp_path / "load.json"
    code = load_test_streaming.main(
        [
            "--spawn",
            f"--server={server}",
            f"--asgi-server={asgi_server or 'auto'}",
            "--workers=1",
            "--concurrent=4",
            "--requests=8",
            f"--sim={FAST_UPSTREAM}",
            f"--json={out}",
            "--quiet",
        ]
    )
    summary = json.loads(out.read_text())
    assert code == 0, capsys.readouterr().out
    assert summary["requests"] == summary["ok"] == 8
    assert summary["lost_chunks"] == summary["duplicate_chunks"] == summary["missing_done"] == 0
    # dream: three sections of 15 tokens each, every one of them seen once.
    assert summary["chunks"] == 8 * 3 * 15
    assert summary["first_chunk_overhead"]["p50_ms"] is not None


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_engine_tree_serves_the_other_trees_package(tmp_path, monkeypatch):
    """``--engine-tree`` for A/B runs: the spawned gunicorn imports ``backend_ai`` from that
    directory, not from this checkout, even when run from the repository root."""
    tree = tmp_path / "tree"
    shutil.copytree(
        ROOT / "backend_ai", tree / "backend_ai", ignore=shutil.ignore_patterns("__pycache__")
    )
    marks = tmp_path / "imported-by"
    # The copy, and only the copy, says which processes imported it.
    with (tree / "backend_ai" / "__init__.py").open("a") as init:
        init.write(
            "\nimport os as _os, sys as _sys\n"
            "with open(_os.environ['ENGINE_TREE_MARKS'], 'a') as _marks:\n"
            "    _marks.write(' '.join(_sys.argv) + '\\n')\n"
        )
    monkeypatch.setenv("ENGINE_TREE_MARKS", str(marks))
    monkeypatch.chdir(ROOT)
    out = tmp_path / "load.json"
    code = load_test_streaming.main(
        [
            "--spawn",
            f"--engine-tree={tree}",
            "--workers=1",
            "--concurrent=2",
            "--requests=2",
            f"--sim={FAST_UPSTREAM}",
            f"--json={out}",
            "--quiet",
        ]
    )
    summary = json.loads(out.read_text())
    assert code == 0
    assert summary["ok"] == 2
    assert summary["engine_path"] == str(tree / "backend_ai")
    assert any("gunicorn" in line for line in marks.read_text().splitlines())


def test_checker_counts_loss_duplicates_and_missing_done():
    result = Result()
    checker = StreamChecker(result, t0=0.0)
    for event in (
        {"type": "start"},
        {"type": "chunk", "section": "a", "seq": 0, "content": "x"},
        {"type": "chunk", "section": "a", "seq": 0, "content": "x"},  # duplicate
        {"type": "chunk", "section": "a", "seq": 3, "content": "x"},  # 1 and 2 lost
        {"type": "section_done", "section": "a", "chunks": 4},
        {"type": "chunk", "section": "b", "seq": 0, "content": "y"},
        {"type": "error", "section": "b", "code": "timeout", "chunks": 2},  # 1 never came
    ):
        checker.event(event)
    assert (result.duplicates, result.lost, result.done) == (1, 3, False)
    assert result.section_errors == {"timeout": 1}
    assert not result.ok


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_benchmark_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "quick.json"
    code = bench_script.main(
        ["--quick", "--repeats=1", f"--output={out}", f"--timeline={tmp_path / 't.png'}"]
    )
    results = json.loads(out.read_text())
    assert code == 0, results["problems"]
    for part in ("fanout", "ttfb", "service", "merge_cost", "http", "peers"):
        assert part in results
    assert results["http"]["http2"]["tcp_connections"] == 1
    # The service's requests were matched with the simulator's records of them.
    service = results["service"]
    ours = service["first_chunk_overhead_ours"]["p50_ms"]
    assert ours is not None
    assert 0 < ours <= service["first_chunk_overhead"]["p50_ms"] + 1
    assert 0 < service["request_to_simulator"]["p50_ms"] < ours
    assert "| N | ideal ms" in capsys.readouterr().out


def test_openai_compatible_probe_runs_against_the_simulator(simulator, capsys):
    """``scripts/try_openai_compatible.py`` as documented in docs/PROTOCOL.md, on the simulator:
    every engine run completes on both transports and both APIs."""
    import try_openai_compatible

    assert try_openai_compatible.main([simulator.base_url]) == 0
    out = capsys.readouterr().out
    assert "responses: 200" in out
    for transport in ("HTTP/1.1", "HTTP/2 prior knowledge"):
        assert f"engine {transport}: run closed after 6 chunks" in out
        for api in ("chat_completions", "responses"):
            line = next(x for x in out.splitlines() if x.startswith(f"engine {transport} {api}"))
            assert "connection_error" not in line
            assert "internal" not in line


def test_gc_pause_log_reports_a_long_collection_of_the_process_it_is_loaded_into():
    """The shim the garbage-collector measurements use: on ``PYTHONPATH``, a full collection
    over many tracked objects (well over its 1 ms floor) becomes one line on stderr."""
    program = "import gc; keep = [[] for _ in range(400_000)]; gc.collect(); print('ran')"
    out = subprocess.run(
        [sys.executable, "-c", program],
        env={"PYTHONPATH": str(ROOT / "scripts" / "gc_pause_log")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "ran"
    lines = [line for line in out.stderr.splitlines() if line.startswith("gc-pause ")]
    assert any("generation=2" in line for line in lines), out.stderr
    fields = dict(part.split("=") for part in lines[-1].split()[1:])
    assert set(fields) == {"pid", "generation", "ms", "collected"}
    assert float(fields["ms"]) >= 1.0


class _ArrivalRecorder(http.server.BaseHTTPRequestHandler):
    """Answers every POST with an empty SSE stream; notes when each connection's first request
    arrived (one load-test client keeps one connection)."""

    protocol_version = "HTTP/1.1"
    first_arrivals: ClassVar[dict[tuple[str, int], float]] = {}

    def do_POST(self) -> None:
        self.first_arrivals.setdefault(self.client_address, time.monotonic())
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'data: {"type":"done"}\n\n'
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _first_arrivals(ramp_s: float) -> list[float]:
    """When each of four load-test clients' first request reached a local server."""
    _ArrivalRecorder.first_arrivals = {}
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ArrivalRecorder) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            asyncio.run(
                run_load(
                    f"http://127.0.0.1:{server.server_address[1]}",
                    "/x",
                    {},
                    concurrent=4,
                    requests=None,
                    duration=ramp_s + 0.2,
                    timeout=10.0,
                    ramp_s=ramp_s,
                    progress=False,
                )
            )
        finally:
            server.shutdown()
    firsts = sorted(_ArrivalRecorder.first_arrivals.values())
    assert len(firsts) == 4
    return firsts


@pytest.mark.timeout(60)
def test_ramp_spreads_the_clients_first_requests():
    """Client i of n starts i * ramp / n seconds in; without a ramp every client starts at once.
    Compared in one run: the smallest gap with a ramp (a connect later than the sleep, so
    allowed a quarter less than a step) against the whole spread without one."""
    ramp_s = 0.8
    ramped = _first_arrivals(ramp_s)
    smallest_gap = min(b - a for a, b in itertools.pairwise(ramped))
    assert smallest_gap >= 0.75 * ramp_s / 4
    at_once = _first_arrivals(0.0)
    assert at_once[-1] - at_once[0] < smallest_gap
