"""The sizes of a benchmark run: ``full`` for the figures in the docs, ``quick`` for CI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PROFILES", "Profile"]


@dataclass(frozen=True, kw_only=True)
class Profile:
    """Sizes of one benchmark run; ``quick`` and ``full`` are the two shipped ones."""

    name: str
    repeats: int
    fanout_ns: tuple[int, ...]
    #: Per-section timing of the fan-out and peer runs (each section gets its own seed).
    section: dict[str, Any]
    #: Uneven run: one slow section first, then ``uneven_fast`` fast ones.
    slow: dict[str, Any]
    fast: dict[str, Any]
    uneven_fast: int
    ttfb: dict[str, Any]
    ttfb_runs: int
    merge_tokens: int
    cancel_tokens: int
    service_ttft_ms: int
    service_requests: int


PROFILES = {
    "full": Profile(
        name="full",
        repeats=5,
        fanout_ns=(1, 3, 6, 9),
        section={"ttft_ms": 300, "itl_ms": 10, "tokens": 40, "jitter": 0.2},
        slow={"ttft_ms": 300, "itl_ms": 10, "tokens": 80, "jitter": 0.2},
        fast={"ttft_ms": 100, "itl_ms": 10, "tokens": 20, "jitter": 0.2},
        uneven_fast=3,
        ttfb={"ttft_ms": 50, "itl_ms": 2, "tokens": 5, "jitter": 0},
        ttfb_runs=40,
        merge_tokens=2000,
        cancel_tokens=2000,
        service_ttft_ms=300,
        service_requests=40,
    ),
    "quick": Profile(
        name="quick",
        repeats=2,
        fanout_ns=(1, 3, 6, 9),
        section={"ttft_ms": 60, "itl_ms": 4, "tokens": 20, "jitter": 0.2},
        slow={"ttft_ms": 80, "itl_ms": 4, "tokens": 40, "jitter": 0.2},
        fast={"ttft_ms": 25, "itl_ms": 4, "tokens": 10, "jitter": 0.2},
        uneven_fast=3,
        ttfb={"ttft_ms": 30, "itl_ms": 2, "tokens": 5, "jitter": 0},
        ttfb_runs=12,
        merge_tokens=400,
        cancel_tokens=500,
        service_ttft_ms=100,
        service_requests=10,
    ),
}
