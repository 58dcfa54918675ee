"""``PerformanceTimer``: time a named block into the same statistics as the sections."""

from __future__ import annotations

import logging
import time
from types import TracebackType

from backend_ai.streaming.stats import (
    SectionRecord,
    StreamStats,
    default_stats,
)

__all__ = ["PerformanceTimer"]

logger = logging.getLogger(__name__)


class PerformanceTimer:
    """``with PerformanceTimer("openai_parallel_stream"): ...`` records and logs the duration.

    The block counts as an error in the statistics when it raises (including when a generator
    it wraps is closed early).
    """

    def __init__(self, name: str, *, stats: StreamStats | None = None) -> None:
        if not name:
            raise ValueError("PerformanceTimer needs a non-empty name")
        self.name = name
        self._stats = stats if stats is not None else default_stats
        self._started: float | None = None
        self.elapsed_ms: float | None = None

    def __enter__(self) -> PerformanceTimer:
        self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._started is not None, "PerformanceTimer exited without being entered"
        self.elapsed_ms = (time.perf_counter() - self._started) * 1000
        ok = exc_type is None
        self._stats.record(self.name, SectionRecord(self.elapsed_ms, ok=ok))
        logger.info("%s took %.1f ms%s", self.name, self.elapsed_ms, "" if ok else " (failed)")
