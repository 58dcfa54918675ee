"""Per-section performance statistics: thread-safe, bounded, resettable.

Bounded twice: each name keeps a rolling window of records, and at most ``max_names`` names
are kept — the least recently recorded goes first — because section names can come from
clients (the compare route names a section after each requested model).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass

__all__ = [
    "SectionRecord",
    "StreamStats",
    "default_stats",
    "get_stream_performance_stats",
    "reset_stream_performance_stats",
]

#: Records kept per section name; older ones drop out of the averages and percentiles.
DEFAULT_WINDOW = 512
#: Names kept at most; recording a new one beyond it forgets the least recently recorded.
DEFAULT_MAX_NAMES = 256


@dataclass(frozen=True, slots=True)
class SectionRecord:
    duration_ms: float
    ttft_ms: float | None = None
    chars: int = 0
    ok: bool = True


@dataclass
class _Series:
    records: deque[SectionRecord]
    count: int = 0
    errors: int = 0


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    index = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


class StreamStats:
    """Counts every record; averages and percentiles cover the last ``window`` per name, for
    the ``max_names`` most recently recorded names."""

    def __init__(self, window: int = DEFAULT_WINDOW, max_names: int = DEFAULT_MAX_NAMES) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if max_names < 1:
            raise ValueError(f"max_names must be at least 1, got {max_names}")
        self._window = window
        self._max_names = max_names
        self._series: OrderedDict[str, _Series] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, name: str, record: SectionRecord) -> None:
        with self._lock:
            series = self._series.get(name)
            if series is None:
                if len(self._series) >= self._max_names:
                    self._series.popitem(last=False)
                series = self._series[name] = _Series(records=deque(maxlen=self._window))
            else:
                self._series.move_to_end(name)
            series.records.append(record)
            series.count += 1
            if not record.ok:
                series.errors += 1

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        """``{name: {count, errors, avg_time_ms, p50_time_ms, p95_time_ms, avg_ttft_ms,
        avg_chars}}`` over the window (``count`` and ``errors`` are totals)."""
        with self._lock:
            copies = {
                name: (s.count, s.errors, list(s.records)) for name, s in self._series.items()
            }
        result: dict[str, dict[str, float | int | None]] = {}
        for name, (count, errors, records) in copies.items():
            times = sorted(r.duration_ms for r in records)
            ttfts = [r.ttft_ms for r in records if r.ttft_ms is not None]
            result[name] = {
                "count": count,
                "errors": errors,
                "avg_time_ms": round(sum(times) / len(times), 3),
                "p50_time_ms": round(_percentile(times, 0.50), 3),
                "p95_time_ms": round(_percentile(times, 0.95), 3),
                "avg_ttft_ms": round(sum(ttfts) / len(ttfts), 3) if ttfts else None,
                "avg_chars": round(sum(r.chars for r in records) / len(records), 1),
            }
        return result

    def reset(self) -> None:
        with self._lock:
            self._series.clear()


#: The process-wide statistics every manager records into unless given its own.
default_stats = StreamStats()


def get_stream_performance_stats() -> dict[str, dict[str, float | int | None]]:
    """Per-section statistics of this process (see ``StreamStats.snapshot``)."""
    return default_stats.snapshot()


def reset_stream_performance_stats() -> None:
    default_stats.reset()
