"""The service's rate budget, from its settings: none, this process's own, or shared via Redis.

With neither ``rpm``/``tpm`` nor ``redis_url`` the service runs without a budget, exactly as it
did before budgets existed (the engine's 429 fallback alone). With limits and no Redis each
process keeps its own window (``LocalRateBudget``): right for one process, N times the limit for
N. With ``redis_url`` every worker on every host shares one window per upstream
(``RedisRateBudget``); losing Redis shows in the log once and in the
``backend_ai_budget_redis_*`` metrics, and never fails a request.

Every upstream answer feeds the budget through the pooled client's response hook: the limits
and remaining counts of the ``x-ratelimit-*`` headers, and a 429's ``Retry-After`` as a
cool-down for everyone sharing the budget.
"""

from __future__ import annotations

import httpx

from backend_ai.app.metrics import ServiceMetrics
from backend_ai.app.services.parallel_streaming.budget import LocalRateBudget, RateBudget
from backend_ai.app.services.parallel_streaming.redis_budget import RedisRateBudget
from backend_ai.app.settings import Settings

__all__ = ["build_rate_budget"]


def build_rate_budget(
    settings: Settings, metrics: ServiceMetrics, http_client: httpx.Client, *, upstream: str
) -> RateBudget | None:
    """The budget ``settings`` ask for, hooked to ``http_client``'s responses; None for none.

    ``upstream`` is the base URL the client sends to: Redis keeps one window per upstream.
    """
    if not settings.rate_budget_enabled:
        return None
    budget: RateBudget
    window_s = settings.budget_window_s
    # Each start counts for the window plus this margin: its way from here to the upstream.
    margin_s = settings.budget_margin_s
    if settings.redis_url is None:
        budget = LocalRateBudget(settings.rpm, settings.tpm, window_s=window_s, margin_s=margin_s)
    else:

        def on_fallback(down: bool) -> None:
            if down:
                metrics.budget_redis_fallbacks.inc()
            metrics.budget_redis_down.set(1 if down else 0)

        budget = RedisRateBudget(
            settings.redis_url,
            # The service's sections share one budget object, so one window per upstream.
            upstream=upstream,
            rpm=settings.rpm,
            tpm=settings.tpm,
            window_s=window_s,
            margin_s=margin_s,
            socket_timeout_s=settings.redis_timeout_s,
            on_fallback=on_fallback,
        )
    http_client.event_hooks["response"].append(
        budget.response_hook(cap_s=settings.max_retry_wait_s)
    )
    return budget
