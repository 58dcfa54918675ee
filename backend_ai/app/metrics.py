"""Prometheus metrics of one app, in a registry of its own.

A registry per app (not prometheus-client's global one) lets several apps live in one process —
every test builds its own — without "Duplicated timeseries" errors. Labels are bounded sets
(route names, error codes, HTTP statuses), never user input. Under gunicorn each worker has its
own registry, so a scrape sees the worker that answered it.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


class ServiceMetrics:
    """The service's counters, gauges and histograms."""

    def __init__(self) -> None:
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
        self.active_streams = Gauge(
            "backend_ai_active_streams", "SSE responses currently open.", registry=r
        )
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

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
