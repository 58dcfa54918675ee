"""The rate budget's arithmetic on a hand-driven clock: window, tokens, headers, cool-down."""

from __future__ import annotations

import threading
import time

import httpx2
import pytest

from backend_ai.errors import ConfigError
from backend_ai.streaming.budget import (
    ANY_MODEL,
    BudgetCancelled,
    BudgetTimeout,
    LocalRateBudget,
    ObservedLimits,
    Permit,
    PerModelRateBudget,
    TokenEstimate,
    TokenEstimator,
    parse_duration,
    parse_rate_limit_headers,
)
from backend_ai.streaming.events import TokenUsage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def est(tokens: int = 10) -> TokenEstimate:
    return TokenEstimate(0, tokens)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("120ms", 0.12),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("17ms", 0.017),
        ("2m", 120.0),
    ],
)
def test_parse_duration_reads_openai_reset_values(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "-1", "1s2", "nan", "s"])
def test_parse_duration_rejects_garbage(text):
    assert parse_duration(text) is None


def test_parse_rate_limit_headers_reads_all_six_and_ignores_bad_values():
    limits = parse_rate_limit_headers(
        {
            "X-RateLimit-Limit-Requests": "60",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-remaining-tokens": "oops",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert limits == ObservedLimits(60, 150000, 59, None, 1.0, 360.0)
    assert parse_rate_limit_headers({"content-type": "x"}).empty


def test_requests_per_window_are_never_exceeded_and_wait_says_when():
    clock = Clock()
    budget = LocalRateBudget(rpm=3, window_s=10, margin_s=0, clock=clock)
    permits = [budget.try_acquire(est()) for _ in range(3)]
    assert all(isinstance(p, Permit) for p in permits)
    clock.now += 4
    wait = budget.try_acquire(est())
    assert wait == pytest.approx(6.0)
    clock.now += 5.999
    assert not isinstance(budget.try_acquire(est()), Permit)
    clock.now += 0.001
    assert isinstance(budget.try_acquire(est()), Permit)


def test_tokens_per_window_and_the_correction_from_usage():
    clock = Clock()
    budget = LocalRateBudget(tpm=100, window_s=10, margin_s=0, clock=clock)
    first = budget.try_acquire(TokenEstimate(40, 40, prompt_chars=160))
    assert isinstance(first, Permit)
    assert budget.try_acquire(TokenEstimate(20, 20)) == pytest.approx(10.0)
    # The upstream said the prompt was 10 tokens: the start now counts 10 + 40.
    budget.settle(first, TokenUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15))
    assert budget.snapshot()["tokens_in_window"] == 50
    assert isinstance(budget.try_acquire(TokenEstimate(20, 20)), Permit)
    # ... and the next estimate of a same-sized prompt is exact: 160 chars are 10 tokens.
    assert budget.estimator.chars_per_token == pytest.approx(16.0)
    assert budget.estimator.estimate(160, 40).prompt_tokens == 10


def test_the_learned_ratio_follows_recent_prompts_without_swinging_on_one():
    estimator = TokenEstimator()
    for _ in range(20):
        estimator.learn(100, 25)  # 4 chars per token
    estimator.learn(100, 100)  # one odd prompt: 1 char per token
    assert 2.5 < estimator.chars_per_token < 4.0  # moved, not swung to 1


def test_a_request_larger_than_the_whole_budget_waits_for_an_empty_window():
    clock = Clock()
    budget = LocalRateBudget(tpm=100, window_s=10, margin_s=0, clock=clock)
    assert isinstance(budget.try_acquire(est(30)), Permit)
    assert budget.try_acquire(est(500)) == pytest.approx(10.0)
    clock.now += 10
    assert isinstance(budget.try_acquire(est(500)), Permit)


def test_a_429_cools_every_holder_down():
    clock = Clock()
    budget = LocalRateBudget(rpm=100, window_s=10, clock=clock)
    budget.observe_response(429, {"retry-after-ms": "1500"}, cap_s=30)
    assert budget.try_acquire(est()) == pytest.approx(1.5)
    clock.now += 1.5
    assert isinstance(budget.try_acquire(est()), Permit)


def test_limits_learned_from_headers_apply_when_none_is_configured():
    clock = Clock()
    budget = LocalRateBudget(clock=clock, window_s=10, margin_s=0)
    assert isinstance(budget.try_acquire(est()), Permit)
    budget.observe(ObservedLimits(limit_requests=2, limit_tokens=1000))
    assert isinstance(budget.try_acquire(est()), Permit)
    assert budget.try_acquire(est()) == pytest.approx(10.0)
    assert budget.snapshot()["rpm"] == 2


def test_what_others_used_counts_until_the_reset():
    clock = Clock()
    budget = LocalRateBudget(rpm=10, window_s=10, clock=clock)
    # The key has 1 start left for 3 s although this process started nothing: someone else.
    budget.observe(ObservedLimits(remaining_requests=1, reset_requests_s=3.0))
    assert isinstance(budget.try_acquire(est()), Permit)
    assert budget.try_acquire(est()) == pytest.approx(3.0)
    clock.now += 3
    assert isinstance(budget.try_acquire(est()), Permit)


def test_acquire_waits_then_admits_and_is_cancellable_and_has_a_deadline():
    budget = LocalRateBudget(rpm=1, window_s=0.3, margin_s=0)
    budget.acquire(est())
    started = time.monotonic()
    budget.acquire(est(), timeout=5)
    assert time.monotonic() - started >= 0.25
    with pytest.raises(BudgetTimeout):
        budget.acquire(est(), timeout=0.05)
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    budget.cool_down(30)
    started = time.monotonic()
    with pytest.raises(BudgetCancelled):
        budget.acquire(est(), cancel=cancel)
    assert time.monotonic() - started < 5


def test_estimator_counts_messages_and_max_tokens():
    from backend_ai.streaming.config import StreamConfig

    estimator = TokenEstimator()
    config = StreamConfig("a", "x" * 40, max_tokens=50, system_prompt="y" * 8)
    assert estimator.estimate_config(config) == TokenEstimate(12, 50, 48, config.model)
    override = StreamConfig(
        "b",
        "ignored",
        extra_body={
            "messages": [{"role": "user", "content": "z" * 400}],
            "max_tokens": 7,
            "model": "gpt-4.1-mini",
        },
    )
    # The body the upstream gets names the model, so that is the window it counts in.
    assert estimator.estimate_config(override) == TokenEstimate(100, 7, 400, "gpt-4.1-mini")


def test_bad_limits_are_config_errors():
    with pytest.raises(ConfigError):
        LocalRateBudget(rpm=0)
    with pytest.raises(ConfigError):
        LocalRateBudget(window_s=0)


def per_model(rpm: int | None = 1, **kwargs: object) -> tuple[PerModelRateBudget, Clock]:
    clock = Clock()

    def window(model: str, estimator: TokenEstimator) -> LocalRateBudget:
        return LocalRateBudget(rpm, window_s=60, estimator=estimator, clock=clock)

    return PerModelRateBudget(window, **kwargs), clock  # type: ignore[arg-type]


def for_model(model: str) -> TokenEstimate:
    return TokenEstimate(0, 10, 0, model)


def test_each_model_has_a_window_of_its_own_with_the_configured_limit():
    budget, _ = per_model(rpm=1)
    assert isinstance(budget.try_acquire(for_model("gpt-4o")), Permit)
    assert isinstance(budget.try_acquire(for_model("gpt-4o")), float)  # its one start is spent
    assert isinstance(budget.try_acquire(for_model("gpt-4o-mini")), Permit)
    assert set(budget.snapshot()["models"]) == {"gpt-4o", "gpt-4o-mini"}
    assert budget.for_model("gpt-4o").estimator is budget.estimator  # one learned ratio


def test_a_cool_down_holds_for_its_model_only_and_an_unknown_model_cools_all():
    budget, _ = per_model(rpm=None)
    budget.try_acquire(for_model("b"))  # b's window exists before the 429
    budget.cool_down(30, model="a")
    assert isinstance(budget.try_acquire(for_model("a")), float)
    assert isinstance(budget.try_acquire(for_model("b")), Permit)
    budget.cool_down(30, model=None)
    assert isinstance(budget.try_acquire(for_model("b")), float)


def test_headers_and_429s_count_for_the_model_the_request_named():
    budget, _ = per_model(rpm=None)
    hook = budget.response_hook(cap_s=60)
    budget.try_acquire(for_model("b"))

    def answer(model: str, status: int, headers: dict[str, str]) -> httpx2.Response:
        request = httpx2.Request("POST", "http://u.test/v1/chat/completions", json={"model": model})
        return httpx2.Response(status, headers=headers, request=request)

    hook(answer("a", 200, {"x-ratelimit-limit-requests": "7"}))
    hook(answer("a", 429, {"retry-after": "20"}))
    a, b = budget.for_model("a").snapshot(), budget.for_model("b").snapshot()
    assert a["rpm"] == 7
    assert a["cooling_down_s"] > 19
    assert b["rpm"] is None
    assert b["cooling_down_s"] == 0


def test_the_number_of_windows_is_bounded_the_rest_share_one():
    budget, _ = per_model(rpm=1, max_models=2)
    assert isinstance(budget.try_acquire(for_model("a")), Permit)
    assert isinstance(budget.try_acquire(for_model("b")), Permit)
    assert isinstance(budget.try_acquire(for_model("c")), Permit)  # the shared window's first
    assert isinstance(budget.try_acquire(for_model("d")), float)  # shares c's window
    assert set(budget.snapshot()["models"]) == {"a", "b", ANY_MODEL}
    with pytest.raises(ConfigError):
        per_model(max_models=0)
