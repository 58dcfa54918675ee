"""The history writer's measurement runs as documented; its figures are in docs/PERFORMANCE.md.

A smoke test: every reading written, none failed or dropped, each mode reported once. How many
transactions a backlog takes is asserted where it is deterministic, in
``tests/integration/test_history_store.py``.
"""

from __future__ import annotations

import json

import bench_support  # noqa: F401  (puts scripts/ on sys.path)
import measure_history
import pytest


@pytest.mark.timeout(120)
def test_measure_history_reports_both_modes(tmp_path, capsys) -> None:
    argv = ["--readings", "40", "--repeats", "1", "--dir", str(tmp_path)]
    assert measure_history.main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["mode"] for row in rows] == ["backlog", "one at a time"]
    for row in rows:
        assert row["readings"] == 40
        assert (row["failed"], row["dropped"]) == (0, 0)
        assert row["cpu_us_per_reading"] > 0
        assert 1 <= row["commits"] <= 40
    # One at a time, each reading is flushed before the next: nothing can share a commit.
    assert rows[1]["commits"] == 40
