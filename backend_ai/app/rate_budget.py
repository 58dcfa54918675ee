"""The rate budget from the service's settings: none, this process's own, or shared via Redis.

With neither ``rpm``/``tpm`` nor ``redis_url`` there is no budget, exactly as before budgets
existed (the engine's 429 fallback alone). With limits and no Redis each process keeps its own
windows (``LocalRateBudget``): right for one process, N times the limit for N. With
``redis_url`` every worker on every host shares them (``RedisRateBudget``); losing Redis shows
in the log once and, given the service's metrics, in the ``backend_ai_budget_redis_*`` metrics,
and never fails a request.

Providers limit each model of a key on its own, so there is one window per upstream and model
(``PerModelRateBudget``), and the configured ``rpm`` / ``tpm`` apply to each model. Every
upstream answer feeds the window of the model its request named, through the client's response
hook: the limits and remaining counts of the ``x-ratelimit-*`` headers, and a 429's
``Retry-After`` as a cool-down for everyone sharing that window.

The service (``extension.build_state``) and the ``backend-ai batch`` command both build their
budget here, so a batch and the service given the same Redis share one budget.
"""

from __future__ import annotations

import httpx

from backend_ai.app.metrics import ServiceMetrics
from backend_ai.app.settings import Settings
from backend_ai.streaming.budget import (
    LocalRateBudget,
    PerModelRateBudget,
    RateBudget,
    TokenEstimator,
)
from backend_ai.streaming.redis_budget import RedisLink, RedisRateBudget

__all__ = ["build_rate_budget"]


def build_rate_budget(
    settings: Settings,
    metrics: ServiceMetrics | None,
    http_client: httpx.Client,
    *,
    upstream: str,
) -> PerModelRateBudget | None:
    """The budget ``settings`` ask for, hooked to ``http_client``'s responses; None for none.

    ``upstream`` is the base URL the client sends to: Redis keeps one window per upstream and
    model. ``metrics`` (None: no metrics) count the times Redis was lost.
    """
    limits = settings.budget
    if not limits.enabled:
        return None
    window_s = limits.window_s
    # Each start counts for the window plus this margin: its way from here to the upstream.
    margin_s = limits.margin_s

    def on_fallback(down: bool) -> None:
        if metrics is None:
            return
        if down:
            metrics.budget_redis_fallbacks.inc()
        metrics.budget_redis_down.set(1 if down else 0)

    # One connection for the windows of every model: an outage is seen and said once.
    link = (
        None
        if limits.redis_url is None
        else RedisLink(
            limits.redis_url, socket_timeout_s=limits.redis_timeout_s, on_fallback=on_fallback
        )
    )

    def window(model: str, estimator: TokenEstimator) -> RateBudget:
        if link is None:
            return LocalRateBudget(
                limits.rpm,
                limits.tpm,
                window_s=window_s,
                margin_s=margin_s,
                estimator=estimator,
            )
        return RedisRateBudget(
            link,
            upstream=upstream,
            model=model,
            rpm=limits.rpm,
            tpm=limits.tpm,
            window_s=window_s,
            margin_s=margin_s,
            estimator=estimator,
        )

    budget = PerModelRateBudget(window, on_close=None if link is None else link.close)
    http_client.event_hooks["response"].append(
        budget.response_hook(cap_s=settings.run.max_retry_wait_s)
    )
    return budget
