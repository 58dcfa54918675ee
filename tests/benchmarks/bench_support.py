"""Profiles shared by the benchmark tests (a module of its own: conftest is not importable)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

#: Long enough that fan-out overhead is small against a section, short enough for CI.
SECTION: dict[str, Any] = {"ttft_ms": 60, "itl_ms": 5, "tokens": 20, "jitter": 0.2}
#: Near-zero upstream latency: what is left is CPU.
BURST: dict[str, Any] = {"ttft_ms": 0, "itl_ms": 0, "tokens": 300, "jitter": 0}
#: Rounds when benchmarks are enabled (``--benchmark-enable``); one run when disabled.
ROUNDS = 5
