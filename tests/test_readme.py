"""The README's usage example works as written (run in a fresh interpreter, as a user would)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _usage_example() -> str:
    match = re.search(r"<!-- usage-example -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md lost its usage example block"
    return match.group(1)


def run_usage_example(prelude: str = "") -> subprocess.CompletedProcess[str]:
    """The usage example in a fresh interpreter, as a user would run it, after ``prelude``."""
    return subprocess.run(
        [sys.executable, "-c", prelude + _usage_example()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_readme_usage_example_streams_both_sections_to_done() -> None:
    result = run_usage_example()
    assert result.returncode == 0, result.stderr[-2000:]
    frames = [f for f in result.stdout.split("\n\n") if f.strip()]
    events = [json.loads(f.removeprefix("data: ")) for f in frames]
    assert events[0]["type"] == "start"
    assert events[-1]["type"] == "done"
    assert sorted(events[-1]["completed"]) == ["summary", "symbols"]
    for section in ("summary", "symbols"):
        seqs = [e["seq"] for e in events if e["type"] == "chunk" and e["section"] == section]
        assert seqs, section
        assert seqs == list(range(len(seqs))), section
