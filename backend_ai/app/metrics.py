"""Prometheus metrics of one app, in a registry of its own, summed over gunicorn's workers.

A registry per app (not prometheus-client's global one) lets several apps live in one process —
every test builds its own — without "Duplicated timeseries" errors. Labels are bounded sets
(route names, error codes, HTTP statuses), never user input.

Under gunicorn a scrape reaches one worker, yet it must describe the service. prometheus-client's
multiprocess mode does that: every worker writes its values to memory-mapped files in the
directory named by ``PROMETHEUS_MULTIPROC_DIR`` and a scrape sums them with a
``MultiProcessCollector``. The gunicorn config (``gunicorn_conf.on_starting``) creates that
directory (or empties a given one) before any worker is forked, and ``child_exit`` drops a dead
worker's live gauges. Counters and histograms of a dead worker stay in the sum, so totals never
go backwards when a worker is replaced. The mode is process-wide and chosen when
prometheus-client is first imported, which is why it comes from the environment and not from
``Settings``; outside gunicorn (tests, the Flask dev server) the variable is unset and each app
reads its own registry, as before.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = ["CONTENT_TYPE_LATEST", "MULTIPROC_DIR_ENV", "ServiceMetrics", "multiprocess_dir"]

#: prometheus-client's own variable: set, it switches every metric of the process to files.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, or None when each process reports only itself."""
    return os.environ.get(MULTIPROC_DIR_ENV) or None


class ServiceMetrics:
    """The service's counters, gauges and histograms."""

    def __init__(self) -> None:
        self._multiprocess_dir = multiprocess_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "backend_ai_http_requests",
            "HTTP requests answered, by endpoint and status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.runs = Counter(
            "backend_ai_runs",
            "Streaming runs finished, by route and outcome (ok, partial, failed, cancelled).",
            ["route", "outcome"],
            registry=r,
        )
        self.sections = Counter(
            "backend_ai_sections",
            "Sections finished, by route and outcome (done, error).",
            ["route", "outcome"],
            registry=r,
        )
        self.section_errors = Counter(
            "backend_ai_section_errors",
            "Sections that ended in an error, by error code.",
            ["code"],
            registry=r,
        )
        self.chunks = Counter(
            "backend_ai_chunks", "Content chunks sent to clients.", ["route"], registry=r
        )
        self.rate_limit_fallbacks = Counter(
            "backend_ai_rate_limit_fallbacks",
            "Runs that fell back to sequential after an upstream 429.",
            ["route"],
            registry=r,
        )
        self.history_dropped = Counter(
            "backend_ai_history_dropped",
            "Readings not saved because the history queue was full.",
            registry=r,
        )
        self.history_failed = Counter(
            "backend_ai_history_failed",
            "Readings not saved because writing them failed (the disk, SQLite, a bad record).",
            registry=r,
        )
        self.request_threads_full = Counter(
            "backend_ai_request_threads_full",
            "Times every request thread of a worker held an open stream: a new request on that "
            "worker then waited for one to end (backend_ai.app.request_threads).",
            registry=r,
        )
        # "livesum": the sum over the workers alive now; a dead worker's open streams are gone.
        self.active_streams = Gauge(
            "backend_ai_active_streams",
            "SSE responses currently open.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.budget_redis_fallbacks = Counter(
            "backend_ai_budget_redis_fallbacks",
            "Times a process lost Redis and fell back to budgeting on its own.",
            registry=r,
        )
        self.budget_redis_down = Gauge(
            "backend_ai_budget_redis_down",
            "Processes budgeting on their own now because Redis is unavailable.",
            registry=r,
            multiprocess_mode="livesum",
        )
        # Each process sets 1: summed over the live workers, it is how many there are.
        self.workers = Gauge(
            "backend_ai_workers",
            "Server processes alive whose metrics this scrape includes.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.workers.set(1)
        self.first_byte = Histogram(
            "backend_ai_first_byte_seconds",
            "From the request reaching the app to the first SSE frame being handed to the server.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "backend_ai_section_ttft_seconds",
            "Time to the first token of a section, as measured by the engine.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.section_duration = Histogram(
            "backend_ai_section_duration_seconds",
            "Duration of successful sections.",
            ["route"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.run_duration = Histogram(
            "backend_ai_run_duration_seconds",
            "Duration of whole runs, from the request to the final event.",
            ["route"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )

    def live_workers(self) -> int:
        """How many processes this scrape describes: the live gunicorn workers, or 1."""
        if self._multiprocess_dir is None:
            return 1
        for family in self._collector().collect():
            if family.name == "backend_ai_workers":
                return round(sum(sample.value for sample in family.samples))
        return 1

    def _collector(self) -> multiprocess.MultiProcessCollector:
        # Not registered: a fresh read of the directory per call, as prometheus-client documents.
        return multiprocess.MultiProcessCollector(None, path=self._multiprocess_dir)

    def render(self) -> bytes:
        """The Prometheus text exposition: of every worker in multiprocess mode, else of this
        registry."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        registry.register(self._collector())
        return generate_latest(registry)
