"""The scripts run as documented: the load test against the real service, the quick benchmark."""

from __future__ import annotations

import json

import benchmark_streaming_performance as bench_script
import load_test_streaming
import pytest
from load_test.client import Result, StreamChecker

FAST_UPSTREAM = json.dumps({"ttft_ms": 30, "itl_ms": 3, "tokens": 15, "jitter": 0})


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
