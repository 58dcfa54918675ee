"""The bounded soak, short: ``scripts/soak_test.py`` for about 25 seconds.

The script starts its own simulator and gunicorn, keeps eight clients busy with a seeded mix
of upstream faults and client disconnects, checks every chunk of every stream and samples the
worker from ``/proc``. Here it must report zero lost, duplicated or misplaced chunks, every
faulty section ending with its fault's code, every other section with its fault-free text, and
no growth of threads, descriptors, connections or memory beyond the script's bounds. The long
version is the same command with ``--duration 180`` (docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak_test.py"
DURATION_S = 25


@pytest.mark.slow
def test_a_short_soak_loses_nothing_and_leaks_nothing(
    tmp_path: Path, figures: Callable[..., None]
) -> None:
    report_path = tmp_path / "soak.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--duration",
            str(DURATION_S),
            "--warmup",
            "8",
            "--sample-every",
            "2",
            "--quiet",
            "--json",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        timeout=DURATION_S + 80,
        check=False,
    )
    assert report_path.exists(), completed.stderr[-3000:]
    report = json.loads(report_path.read_text())
    summary = {k: v for k, v in report.items() if k not in ("samples", "worker")}
    assert report["violations"] == 0, report["violation_examples"]
    assert report["lost"] == 0
    assert report["duplicated"] == 0
    assert report["leaks"] == [], report["leaks"]
    assert completed.returncode == 0, summary
    # The mix really was exercised: every scenario ran, faults and disconnects happened.
    assert report["streams_checked"] > 100, summary
    assert report["client_disconnects"] > 10, summary
    assert len(report["scenarios"]) == 10, report["scenarios"]
    assert report["upstream"]["streams_active"] == 0
    figures(
        "soak_short",
        duration_s=report["duration_s"],
        concurrency=report["concurrency"],
        requests=report["requests"],
        streams_checked=report["streams_checked"],
        chunks_checked=report["chunks_checked"],
        faults_injected=report["faults_injected"],
        client_disconnects=report["client_disconnects"],
        lost=report["lost"],
        duplicated=report["duplicated"],
        worker_growth=report["worker"]["growth"],
        worker_max=report["worker"]["max"],
    )
