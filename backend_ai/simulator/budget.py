"""Per-API-key admission: at most C concurrent requests and R requests per second, and
requests and tokens per window (a minute, like the provider's limits).

This is how provider rate limits hit an app that opens several streams at once: the first few
of a burst go through, the rest get 429 with a ``Retry-After`` that says when a slot frees up.
The per-second rate limit is a token bucket (capacity ``max(1, R)``, refilled at R per second),
so a burst of exactly R requests passes and the next one waits ``1/R`` seconds.

The per-window limits are a moving window over arrivals: a request is admitted when the
admitted requests of the last ``window_s`` seconds, plus it, stay within the limits, its tokens
counted as its prompt plus its ``max_tokens``, as OpenAI counts them. Every answer then carries
the ``x-ratelimit-limit-*``, ``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` headers the
real API sends (resets in its ``1m2.5s`` / ``120ms`` format: the time until the window is
empty again), so a client can keep to the budget without being told by a 429.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field

from .profile import Budget

__all__ = ["Admission", "BudgetLimiter", "format_duration", "retry_after_headers"]

_MIN_RETRY_S = 0.05


@dataclass(frozen=True)
class Admission:
    """Admitted with a ``ticket`` to release later, or refused for ``retry_after`` seconds."""

    admitted: bool
    ticket: int = 0
    retry_after: float = 0.0
    reason: str = ""
    #: The ``x-ratelimit-*`` headers to send with the answer (empty without window limits).
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


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


class _Window:
    """Admitted requests of the last ``window_s`` seconds, as ``(arrival, tokens)``."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.log: deque[tuple[float, int]] = deque()
        self.tokens = 0

    def expire(self, now: float) -> None:
        while self.log and self.log[0][0] + self.window_s <= now:
            self.tokens -= self.log.popleft()[1]

    def wait_for(self, now: float, rpm: int | None, tpm: int | None, cost: int) -> float:
        waits = [0.0]
        if rpm is not None and len(self.log) + 1 > rpm:
            waits.append(self.log[len(self.log) - rpm][0] + self.window_s - now)
        if tpm is not None and self.tokens + min(cost, tpm) > tpm:
            excess = self.tokens + min(cost, tpm) - tpm
            freed = 0
            for arrival, tokens in self.log:
                freed += tokens
                if freed >= excess:
                    waits.append(arrival + self.window_s - now)
                    break
        return max(waits)

    def reset_s(self, now: float) -> float:
        return self.log[-1][0] + self.window_s - now if self.log else 0.0


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: ``120ms`` under a second, else ``1s``, ``6m0s``, ``1h2m3.5s``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{round(secs, 3):g}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


class BudgetLimiter:
    """Admission state for one :class:`Budget`; replaced wholesale when the budget changes."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._buckets: dict[str, _Bucket] = {}
        # key -> ticket -> expected end (monotonic), to estimate when a slot frees up
        self._active: dict[str, dict[int, float]] = {}
        self._windows: dict[str, _Window] = {}
        self._tickets = itertools.count(1)

    def _window_headers(self, window: _Window, now: float) -> list[tuple[bytes, bytes]]:
        budget = self.budget
        headers: list[tuple[bytes, bytes]] = []
        reset = format_duration(window.reset_s(now)).encode()
        if budget.rpm_per_key is not None:
            left = max(0, budget.rpm_per_key - len(window.log))
            headers += [
                (b"x-ratelimit-limit-requests", str(budget.rpm_per_key).encode()),
                (b"x-ratelimit-remaining-requests", str(left).encode()),
                (b"x-ratelimit-reset-requests", reset),
            ]
        if budget.tpm_per_key is not None:
            left = max(0, budget.tpm_per_key - window.tokens)
            headers += [
                (b"x-ratelimit-limit-tokens", str(budget.tpm_per_key).encode()),
                (b"x-ratelimit-remaining-tokens", str(left).encode()),
                (b"x-ratelimit-reset-tokens", reset),
            ]
        return headers

    def acquire(self, key: str, expected_duration_s: float, tokens: int = 0) -> Admission:
        """Admit one request of ``tokens`` (prompt plus ``max_tokens``) or refuse it."""
        now = time.monotonic()
        window: _Window | None = None
        if self.budget.rpm_per_key is not None or self.budget.tpm_per_key is not None:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window(self.budget.window_s)
            window.expire(now)
            wait = window.wait_for(now, self.budget.rpm_per_key, self.budget.tpm_per_key, tokens)
            if wait > 0:
                return Admission(
                    False,
                    retry_after=max(_MIN_RETRY_S, wait),
                    reason=f"more than the requests or tokens per {self.budget.window_s:g} s "
                    "for this API key",
                    headers=self._window_headers(window, now),
                )
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
        headers: list[tuple[bytes, bytes]] = []
        if window is not None:
            window.log.append((now, tokens))
            window.tokens += tokens
            headers = self._window_headers(window, now)
        return Admission(True, ticket=ticket, headers=headers)

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
