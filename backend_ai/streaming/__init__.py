"""Several blocking OpenAI streams at once, merged into one tagged event stream.

Public API (the import paths the README shows)::

    from backend_ai.streaming import (
        StreamConfig, ParallelStreamManager, create_parallel_stream,
        optimize_stream_config, get_stream_performance_stats, get_http_client,
    )

One module per concept: ``config`` (what to stream, how), ``events`` (what comes out),
``sse`` (events as SSE frames), ``manager`` (the run loop), ``worker`` (one section),
``channel`` (bounded fan-in), ``ordering`` (modes), ``rate_limit`` (Retry-After),
``budget`` (the proactive requests/tokens-per-minute budget), ``batch`` (many items, each
delivered whole as it finishes),
``upstream`` (raw SSE parsing, error translation), ``transport`` and ``http_pool`` (the pooled
HTTP/2 client with cancellable streams), ``executor`` (the shared thread pool), ``stats``.
"""

from backend_ai.errors import ConfigError
from backend_ai.streaming.batch import (
    BatchItem,
    BatchOptions,
    BatchRunner,
    ItemResult,
)
from backend_ai.streaming.budget import LocalRateBudget, RateBudget
from backend_ai.streaming.config import (
    PRESETS,
    Mode,
    RunOptions,
    StreamConfig,
    optimize_stream_config,
)
from backend_ai.streaming.events import (
    ContentChunk,
    ErrorCode,
    Event,
    Heartbeat,
    RateLimitFallback,
    ReasoningChunk,
    RunDone,
    RunStarted,
    SectionDone,
    SectionError,
    SectionStarted,
    TokenUsage,
)
from backend_ai.streaming.executor import (
    SectionExecutor,
    get_section_executor,
    shutdown_section_executor,
)
from backend_ai.streaming.http_pool import (
    HttpClientPool,
    PoolSettings,
    build_http_client,
    close_http_client,
    get_http_client,
)
from backend_ai.streaming.manager import (
    ParallelStreamManager,
    create_parallel_stream,
)
from backend_ai.streaming.sse import encode_event, format_sse
from backend_ai.streaming.stats import (
    StreamStats,
    get_stream_performance_stats,
    reset_stream_performance_stats,
)

__all__ = [
    "PRESETS",
    "BatchItem",
    "BatchOptions",
    "BatchRunner",
    "ConfigError",
    "ContentChunk",
    "ErrorCode",
    "Event",
    "Heartbeat",
    "HttpClientPool",
    "ItemResult",
    "LocalRateBudget",
    "Mode",
    "ParallelStreamManager",
    "PoolSettings",
    "RateBudget",
    "RateLimitFallback",
    "ReasoningChunk",
    "RunDone",
    "RunOptions",
    "RunStarted",
    "SectionDone",
    "SectionError",
    "SectionExecutor",
    "SectionStarted",
    "StreamConfig",
    "StreamStats",
    "TokenUsage",
    "build_http_client",
    "close_http_client",
    "create_parallel_stream",
    "encode_event",
    "format_sse",
    "get_http_client",
    "get_section_executor",
    "get_stream_performance_stats",
    "optimize_stream_config",
    "reset_stream_performance_stats",
    "shutdown_section_executor",
]
