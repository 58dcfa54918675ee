"""Several blocking OpenAI streams at once, merged into one tagged event stream.

Public API (the import paths the README shows)::

    from backend_ai.streaming import (
        StreamConfig, RunOptions, ParallelStreamManager, create_parallel_stream,
        optimize_stream_config, get_stream_performance_stats,
        get_http_client, build_http_client, PoolSettings,
    )

Those are what a caller calls; everything else is imported from the module it lives in, which
is where its documentation is: the event classes a run yields from ``events``, the batch runner
from ``batch``, the rate budgets from ``budget``, the SSE encoders from ``sse``, the shared
thread pool from ``executor``; errors from ``backend_ai.errors``.

One module per concept: ``config`` (what to stream, how), ``events`` (what comes out),
``sse`` (events as SSE frames), ``manager`` (the run loop), ``worker`` (one section),
``channel`` (bounded fan-in), ``ordering`` (modes), ``rate_limit`` (Retry-After),
``budget`` and ``redis_budget`` (the proactive requests/tokens-per-minute budget, in one
process or shared through Redis), ``batch`` (many items, each delivered whole as it finishes),
``upstream`` (raw SSE parsing, error translation) and ``parsers`` (the other API shapes),
``executor`` (the shared thread pool), ``stats`` (per-section timings). The pooled HTTP client:
``http_pool`` (the process-wide client), ``transport`` (its httpx transport), ``connection_pool``
(connections per origin), ``sockets`` (TCP, TLS, protocol choice), ``http2`` and ``http11``
(one connection each), ``cancel`` (closing a worker's upstream from another thread).
"""

from backend_ai.streaming.config import RunOptions, StreamConfig, optimize_stream_config
from backend_ai.streaming.http_pool import PoolSettings, build_http_client, get_http_client
from backend_ai.streaming.manager import ParallelStreamManager, create_parallel_stream
from backend_ai.streaming.stats import get_stream_performance_stats

__all__ = [
    "ParallelStreamManager",
    "PoolSettings",
    "RunOptions",
    "StreamConfig",
    "build_http_client",
    "create_parallel_stream",
    "get_http_client",
    "get_stream_performance_stats",
    "optimize_stream_config",
]
