"""Per-API-key admission: at most C concurrent requests and R requests per second.

This is how provider rate limits hit an app that opens several streams at once: the first few
of a burst go through, the rest get 429 with a ``Retry-After`` that says when a slot frees up.
The rate limit is a token bucket (capacity ``max(1, R)``, refilled at R per second), so a burst
of exactly R requests passes and the next one waits ``1/R`` seconds.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

from .profile import Budget

__all__ = ["Admission", "BudgetLimiter", "retry_after_headers"]

_MIN_RETRY_S = 0.05


@dataclass(frozen=True)
class Admission:
    """Admitted with a ``ticket`` to release later, or refused for ``retry_after`` seconds."""

    admitted: bool
    ticket: int = 0
    retry_after: float = 0.0
    reason: str = ""


class _Bucket:
    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token; return 0 on success, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class BudgetLimiter:
    """Admission state for one :class:`Budget`; replaced wholesale when the budget changes."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._buckets: dict[str, _Bucket] = {}
        # key -> ticket -> expected end (monotonic), to estimate when a slot frees up
        self._active: dict[str, dict[int, float]] = {}
        self._tickets = itertools.count(1)

    def acquire(self, key: str, expected_duration_s: float) -> Admission:
        now = time.monotonic()
        concurrent = self.budget.max_concurrent_per_key
        active = self._active.setdefault(key, {})
        if concurrent is not None and len(active) >= concurrent:
            retry = max(_MIN_RETRY_S, min(active.values()) - now)
            return Admission(
                False,
                retry_after=retry,
                reason=f"more than {concurrent} concurrent requests for this API key",
            )
        if self.budget.rps_per_key is not None:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(self.budget.rps_per_key, now)
            wait = bucket.take(now)
            if wait > 0:
                return Admission(
                    False,
                    retry_after=max(_MIN_RETRY_S, wait),
                    reason=f"more than {self.budget.rps_per_key:g} requests per second "
                    "for this API key",
                )
        ticket = next(self._tickets)
        active[ticket] = now + max(0.0, expected_duration_s)
        return Admission(True, ticket=ticket)

    def release(self, key: str, ticket: int) -> None:
        active = self._active.get(key)
        if active is not None:
            active.pop(ticket, None)
            if not active:
                del self._active[key]


def retry_after_headers(seconds: float) -> list[tuple[bytes, bytes]]:
    """``Retry-After`` (whole seconds, rounded up, as HTTP requires) and ``retry-after-ms``."""
    return [
        (b"retry-after", str(max(0, math.ceil(seconds))).encode()),
        (b"retry-after-ms", str(max(0, round(seconds * 1000))).encode()),
    ]
