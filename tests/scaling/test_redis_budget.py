"""``RedisRateBudget`` against a real ``redis-server``: shared, atomic, and never in the way.

Two budget objects on one Redis stand for two processes (or hosts): whatever one admits, the
other sees. Redis faults are real ones — the server killed, restarted empty, or frozen with
``CLIENT PAUSE`` — and each must leave the caller with an answer from the local budget.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from backend_ai.app.redis_process import RedisProcess
from backend_ai.streaming.budget import (
    Permit,
    PerModelRateBudget,
    TokenEstimate,
    TokenEstimator,
)
from backend_ai.streaming.events import TokenUsage
from backend_ai.streaming.redis_budget import (
    KEY_PREFIX,
    RedisLink,
    RedisRateBudget,
    key_part,
)

UPSTREAM = "http://upstream.test/v1"


def one(tokens: int = 10) -> TokenEstimate:
    return TokenEstimate(prompt_tokens=tokens, completion_tokens=0, prompt_chars=tokens * 4)


@pytest.fixture
def make_budget(redis_server: RedisProcess) -> Iterator[Any]:
    budgets: list[RedisRateBudget] = []

    def factory(**kwargs: Any) -> RedisRateBudget:
        kwargs.setdefault("upstream", UPSTREAM)
        budget = RedisRateBudget(redis_server.url, **kwargs)
        budgets.append(budget)
        return budget

    yield factory
    for budget in budgets:
        budget.close()


def admitted(budget: RedisRateBudget, n: int, tokens: int = 10) -> int:
    return sum(isinstance(budget.try_acquire(one(tokens)), Permit) for _ in range(n))


def test_two_processes_share_one_requests_window(make_budget: Any) -> None:
    a, b = make_budget(rpm=5), make_budget(rpm=5)
    assert admitted(a, 3) == 3
    assert admitted(b, 5) == 2
    wait = a.try_acquire(one())
    assert isinstance(wait, float)
    assert 50 < wait <= 61.3  # until the oldest start leaves the minute (plus the margin)
    snapshot = b.snapshot()
    assert snapshot["store"] == "redis"
    assert snapshot["requests_in_window"] == 5
    assert snapshot["admitted"] == 5


def test_upstreams_and_models_have_separate_windows(make_budget: Any) -> None:
    a = make_budget(rpm=2, model="gpt-4o")
    assert admitted(a, 3) == 2
    assert admitted(make_budget(rpm=2, model="gpt-4o-mini"), 2) == 2
    assert admitted(make_budget(rpm=2, model="gpt-4o", upstream="http://other.test/v1"), 2) == 2
    assert admitted(make_budget(rpm=2, model="gpt-4o"), 1) == 0


def test_starts_leave_the_window_when_it_has_passed(make_budget: Any) -> None:
    a, b = make_budget(rpm=2, window_s=0.4, margin_s=0.0), make_budget(rpm=2, window_s=0.4)
    assert admitted(a, 3) == 2
    wait = b.try_acquire(one())
    assert isinstance(wait, float)
    assert 0 < wait <= 0.41  # until a's first start leaves (less the time the calls took)
    time.sleep(wait + 0.02)
    assert admitted(b, 1) == 1


def test_tokens_are_corrected_from_the_reported_usage(make_budget: Any) -> None:
    a, b = make_budget(tpm=100), make_budget(tpm=100)
    permit = a.try_acquire(TokenEstimate(prompt_tokens=50, completion_tokens=10, prompt_chars=200))
    assert isinstance(permit, Permit)
    assert isinstance(b.try_acquire(one(50)), float)  # 60 + 50 > 100
    # The upstream counted 20 prompt tokens, not 50: the shared count drops to 30.
    a.settle(permit, TokenUsage(prompt_tokens=20, completion_tokens=5, total_tokens=25))
    assert b.snapshot()["tokens_in_window"] == 30
    assert isinstance(b.try_acquire(one(50)), Permit)
    assert a.estimator.chars_per_token > 4.0  # 200 characters were 20 tokens: it learned


def test_a_cool_down_learned_by_one_holds_for_all(make_budget: Any) -> None:
    a, b = make_budget(rpm=100), make_budget(rpm=100)
    a.observe_response(429, {"retry-after-ms": "1500"}, cap_s=60.0)
    wait = b.try_acquire(one())
    assert isinstance(wait, float)
    assert 0.5 < wait <= 1.5
    assert b.snapshot()["cooling_down_s"] > 0.5


def test_limits_and_remaining_from_headers_are_shared(make_budget: Any) -> None:
    a, b = make_budget(), make_budget()  # no configured limit: learned from the upstream
    a.observe_response(
        200,
        {"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "1",
         "x-ratelimit-reset-requests": "2s"},
        cap_s=60.0,
    )  # fmt: skip
    # Someone else used two of the three: one start is left until the reset.
    assert admitted(b, 3) == 1
    assert b.snapshot()["rpm"] == 3


def test_concurrent_starts_never_exceed_the_budget(make_budget: Any) -> None:
    budgets = [make_budget(rpm=40) for _ in range(4)]
    counts = [0] * 8
    start = threading.Barrier(8)

    def hammer(i: int) -> None:
        start.wait()
        counts[i] = admitted(budgets[i % 4], 25)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(counts) == 40


def test_redis_down_falls_back_at_once_says_so_once_and_comes_back(
    make_budget: Any, redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[bool] = []
    budget = make_budget(rpm=1000, on_fallback=events.append, backoff_base_s=0.05)
    assert admitted(budget, 2) == 2
    redis_server.kill()
    with caplog.at_level(logging.INFO, logger="backend_ai"):
        assert admitted(budget, 20) == 20  # the local budget answers
        assert not budget.using_redis
        assert budget.snapshot()["store"] == "local"
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "unavailable" in warnings[0].getMessage()
        assert redis_server.url not in caplog.text
        redis_server.restart()

        def back() -> bool:
            budget.try_acquire(one())
            return budget.using_redis

        deadline = time.monotonic() + 10
        while not back():
            assert time.monotonic() < deadline, "never went back to Redis"
            time.sleep(0.02)
    assert events == [True, False]
    assert budget.fallbacks == 1
    snapshot = budget.snapshot()
    assert snapshot["store"] == "redis"
    assert snapshot["requests_in_window"] >= 1  # counting in the restarted Redis


def test_a_frozen_redis_costs_a_short_timeout_not_the_freeze(
    make_budget: Any, redis_server: RedisProcess
) -> None:
    budget = make_budget(rpm=1000, socket_timeout_s=0.1)
    assert admitted(budget, 1) == 1
    freeze_s = 2.0
    with redis.Redis.from_url(redis_server.url) as admin:
        admin.execute_command("CLIENT", "PAUSE", int(freeze_s * 1000), "ALL")  # every client waits
        started = time.perf_counter()
        results = [budget.try_acquire(one()) for _ in range(10)]
        elapsed = time.perf_counter() - started
        admin.execute_command("CLIENT", "UNPAUSE")
    assert all(isinstance(r, Permit) for r in results)
    # A timed-out call (or a few probes), then the local budget: a fraction of the freeze.
    assert elapsed < freeze_s / 2, elapsed
    assert budget.fallbacks == 1


def test_keys_name_the_model_and_stay_bounded_for_any_model_name(
    make_budget: Any, redis_server: RedisProcess
) -> None:
    odd = "ft:{gpt-4o}|" + "x" * 2000  # braces would split the hash tag; long would bloat keys
    for model in ("gpt-4o", "gpt-4o-mini", odd, odd + "y"):
        assert admitted(make_budget(rpm=1, model=model), 2) == 1  # a window of its own each
    with redis.Redis.from_url(redis_server.url) as client:
        keys = sorted(k.decode() for k in client.keys(KEY_PREFIX + "*"))
    assert len(keys) == 4 * 3  # log, tokens and meta per model
    assert f"{KEY_PREFIX}{{{UPSTREAM}|gpt-4o}}:log" in keys
    assert f"{KEY_PREFIX}{{{UPSTREAM}|gpt-4o-mini}}:log" in keys
    assert max(len(k) for k in keys) < 200
    assert all(k.count("{") == 1 and k.count("}") == 1 for k in keys)
    assert key_part(odd) != key_part(odd + "y")


def test_per_model_windows_on_one_link_cool_down_apart_and_fall_back_together(
    redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[bool] = []
    link = RedisLink(redis_server.url, on_fallback=events.append)

    def window(model: str, estimator: TokenEstimator) -> RedisRateBudget:
        return RedisRateBudget(link, upstream=UPSTREAM, model=model, rpm=100, estimator=estimator)

    budget = PerModelRateBudget(window, on_close=link.close)
    other_process = RedisRateBudget(redis_server.url, upstream=UPSTREAM, model="gpt-4o")
    try:
        mini = TokenEstimate(1, 1, 4, "gpt-4o-mini")
        assert isinstance(budget.try_acquire(mini), Permit)
        budget.cool_down(30, model="gpt-4o")
        assert isinstance(budget.try_acquire(TokenEstimate(1, 1, 4, "gpt-4o")), float)
        assert isinstance(budget.try_acquire(mini), Permit)
        # Shared: another process's gpt-4o window sees the cool-down in Redis.
        assert other_process.snapshot()["cooling_down_s"] > 25
        redis_server.kill()
        with caplog.at_level(logging.WARNING, logger="backend_ai"):
            assert isinstance(budget.try_acquire(mini), Permit)  # the local fallback answers
            budget.for_model("gpt-4o").snapshot()
        assert events == [True]  # one link: the outage is noticed and said once
        assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    finally:
        other_process.close()
        budget.close()
