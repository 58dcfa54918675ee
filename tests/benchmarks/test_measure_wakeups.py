"""The paced CPU measurement runs as documented: engine beside the h2 floor, burst figure.

Short mode only (``--quick``): a smoke test of the script, the lean paced upstream and the
single-thread floor. Facts are asserted (every chunk delivered to both, a ratio computed in
the same repeat, the upstream far cheaper per chunk than the client), never a time: the
figures themselves are in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import json
import os

import bench_support  # noqa: F401  (puts scripts/ on sys.path)
import httpx
import measure_wakeups
import pytest
from peers.h2_floor import read_streams
from peers.harness import sim_sections
from peers.paced_upstream import PacedUpstream


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_measure_wakeups_quick_prints_engine_floor_ratio_and_burst(tmp_path, capsys) -> None:
    out = tmp_path / "wakeups.json"
    assert measure_wakeups.main(["--quick", f"--json={out}"]) == 0
    results = json.loads(out.read_text())
    rows = {row["pool"]: row for row in results["runs"]}
    # K = 2 runs x 3 sections x 10 chunks, delivered whole to the engine and to the floor.
    assert rows["h2"]["chunks"] == rows["floor"]["chunks"] == 2 * 3 * 10
    (engine,) = [e for e in results["summary"] if e["pool"] == "h2"]
    assert engine["engine_over_floor"]["median"] > 0
    # Each engine thread kind that worked is accounted, and the parts fit in the whole (the
    # process's CPU also includes the main thread and start-up of the level's threads).
    by_thread = rows["h2"]["thread_cpu_us_per_chunk"]
    assert set(by_thread) >= {"reader", "consumers", "section_pool"}
    assert by_thread["reader"] > 0
    assert by_thread["consumers"] > 0
    assert sum(by_thread.values()) <= rows["h2"]["cpu_us_per_chunk"] * 1.05
    # So are their wake-ups: the reader and the consumers each slept at least once, and the
    # threads' counts fit in the process's (which also counts the main thread's waits).
    woken = rows["h2"]["thread_voluntary_ctx_per_chunk"]
    assert set(woken) == set(by_thread)
    assert woken["reader"] > 0
    assert woken["consumers"] > 0
    assert sum(woken.values()) <= rows["h2"]["voluntary_ctx_per_chunk"] + 0.01
    # A write carries at least one chunk, and none carries more than the run's 30.
    assert 1 <= rows["h2"]["chunks_per_write"] <= 30
    # The warm figures: every part measured, the engine's reader side and the floor's parsing
    # each less than a paced chunk costs the engine in all.
    warm = results["warm"]
    assert set(warm) == {"h2", "floor", "engine_reader_side"}
    assert all(value > 0 for value in warm.values())
    assert warm["h2"] + warm["engine_reader_side"] < rows["h2"]["cpu_us_per_chunk"]
    # Each run's sections have their own seeds: independent users are never in step.
    assert results["shared_schedule"] is False
    assert results["burst"]["cpu_us_per_chunk"]["median"] > 0
    assert results["upstream"] == "paced"
    printed = capsys.readouterr().out
    assert "| K runs | pool | CPU µs/chunk | ÷ floor |" in printed
    assert "burst (3 sections x 200 chunks" in printed
    assert "warm, in a tight loop" in printed
    assert "wake-ups (voluntary switches) per chunk: " in printed
    assert "chunks per write that carried any: " in printed


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_measure_wakeups_one_core_pins_every_thread_then_frees_them(tmp_path) -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs two cores: one for the upstream, one for the measured process")
    upstream_cpu, one_core = cores[-1], cores[0]
    out = tmp_path / "wakeups.json"
    argv = ["--quick", "--burst-tokens=0", f"--upstream-cpu={upstream_cpu}"]
    assert measure_wakeups.main([*argv, f"--one-core={one_core}", f"--json={out}"]) == 0
    results = json.loads(out.read_text())
    rows = {row["pool"]: row for row in results["runs"]}
    pinned = f"h2 on cpu{one_core}", f"floor on cpu{one_core}"
    assert set(rows) == {"h2", "floor", *pinned}
    for name, row in rows.items():
        assert row["chunks"] == 2 * 3 * 10, name
        # While pinned, every thread (those the level started included) may use that core
        # alone; the free levels ran with the process's whole affinity again.
        assert row["cores"] == ([one_core] if name in pinned else cores), name
    ratios = {e["pool"]: e.get("engine_over_floor") for e in results["summary"]}
    assert ratios[pinned[0]]["median"] > 0
    assert ratios["h2"]["median"] > 0
    assert ratios[pinned[1]] is None
    assert results["one_core"] == one_core
    assert measure_wakeups._cores_in_use() == cores


@pytest.mark.timeout(60)
def test_paced_upstream_paces_and_serves_h2_and_http1() -> None:
    """The floor reads every chunk over HTTP/2; HTTP/1.1 gets the same stream, chunked."""
    controls = {"ttft_ms": 20, "itl_ms": 10, "tokens": 8, "jitter": 0}
    sections = sim_sections(3, controls)
    with PacedUpstream(**controls) as upstream:  # type: ignore[arg-type]
        result = read_streams(upstream.base_url, [sections, sections])
        assert result.chunks == 2 * 3 * 8
        body = {"model": "m", "stream": True, "sim": {"tokens": 5, "itl_ms": 5}}
        response = httpx.post(f"{upstream.base_url}/chat/completions", json=body, timeout=10)
        lines = [line for line in response.text.split("\n") if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        contents = [
            json.loads(line[6:])["choices"][0]["delta"].get("content")
            for line in lines[:-1]
            if json.loads(line[6:])["choices"]
        ]
        assert len([c for c in contents if c]) == 5
        stats = upstream.stats()
        # 48 chunks to the floor, 5 over HTTP/1.1; a stream's last chunk carries its tail.
        assert stats["chunks_sent"] == 48 + 5
        assert stats["streams_started"] == 7
