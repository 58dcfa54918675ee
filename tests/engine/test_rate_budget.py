"""The proactive rate budget on page runs, end to end against the simulator's budget mode.

The simulator counts requests and tokens per window by arrival and answers with the
``x-ratelimit-*`` headers; its own records (arrival time, status, tokens counted) are the
judge. A short window keeps the tests quick; the arithmetic is the same as for a minute.
"""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from backend_ai.streaming import ParallelStreamManager, RunOptions, build_http_client
from backend_ai.streaming.budget import (
    LocalRateBudget,
    PerModelRateBudget,
    TokenEstimator,
)
from backend_ai.streaming.events import ErrorCode, SectionDone, SectionError

from .conftest import H2
from .helpers import API_KEY, section

WINDOW_S = 1.0
RPM = 4


def max_in_any_window(records: list[dict[str, Any]], window: float, key: str | None = None) -> int:
    """Most requests (or ``key`` totals) whose arrivals fall within one ``window``."""
    times = sorted((r["t_start"], (r[key] or 0) if key else 1) for r in records)
    best = 0
    for i, (start, _) in enumerate(times):
        total = sum(value for t, value in times[i:] if t < start + window)
        best = max(best, total)
    return best


def run_pages(manager: ParallelStreamManager, runs: int, per_run: int) -> list[Any]:
    events = []
    for run in range(runs):
        configs = [section(f"r{run}s{i}", tokens=3) for i in range(per_run)]
        events.extend(manager.stream(configs))
    return events


def completion_records(simulator: Any) -> list[dict[str, Any]]:
    return [r for r in simulator.stats()["requests"] if r["path"].endswith("/chat/completions")]


def test_with_the_budget_the_upstream_never_sees_more_than_it_and_never_says_429(
    make_client, executor, stats, simulator
):
    simulator.configure(budget={"rpm_per_key": RPM, "window_s": WINDOW_S})
    budget = LocalRateBudget(rpm=RPM, window_s=WINDOW_S)
    manager = ParallelStreamManager(
        make_client(), executor=executor, stats=stats, budget=budget, options=RunOptions()
    )
    run_pages(manager, runs=3, per_run=3)
    records = completion_records(simulator)
    assert len(records) == 9
    assert all(r["status"] == 200 for r in records), [r["status"] for r in records]
    assert max_in_any_window(records, WINDOW_S) <= RPM
    # The budget made the run wait: 9 starts at 4 per window need at least two windows.
    span = max(r["t_start"] for r in records) - min(r["t_start"] for r in records)
    assert span >= 2 * WINDOW_S * 0.95


def test_the_same_runs_without_the_budget_are_refused(make_client, executor, stats, simulator):
    simulator.configure(budget={"rpm_per_key": RPM, "window_s": WINDOW_S})
    manager = ParallelStreamManager(make_client(), executor=executor, stats=stats)
    run_pages(manager, runs=3, per_run=3)
    statuses = [r["status"] for r in completion_records(simulator)]
    assert statuses.count(429) >= 1


def test_limits_learned_from_the_headers_alone_stop_the_429s_after_the_first_window(
    make_client, executor, stats, simulator
):
    simulator.configure(budget={"rpm_per_key": RPM, "tpm_per_key": 2000, "window_s": WINDOW_S})
    budget = LocalRateBudget(window_s=WINDOW_S)  # nothing configured: the headers tell
    http_client = build_http_client(H2)
    http_client.event_hooks["response"].append(budget.response_hook())
    client = openai.OpenAI(api_key=API_KEY, base_url=simulator.base_url, http_client=http_client)
    manager = ParallelStreamManager(client, executor=executor, stats=stats, budget=budget)
    try:
        run_pages(manager, runs=4, per_run=3)
    finally:
        client.close()
        http_client.close()
    records = completion_records(simulator)
    first = min(r["t_start"] for r in records)
    late_refusals = [r for r in records if r["status"] == 429 and r["t_start"] > first + WINDOW_S]
    assert not late_refusals
    assert budget.snapshot()["rpm"] == RPM
    assert budget.snapshot()["tpm"] == 2000


def test_a_section_waiting_on_the_budget_ends_at_the_run_deadline(
    make_client, executor, stats, simulator
):
    budget = LocalRateBudget(rpm=1, window_s=60)
    manager = ParallelStreamManager(
        make_client(),
        executor=executor,
        stats=stats,
        budget=budget,
        options=RunOptions(deadline_s=0.5),
    )
    started = time.monotonic()
    events = list(manager.stream([section("first", tokens=3), section("second", tokens=3)]))
    elapsed = time.monotonic() - started
    ends = {e.section: e for e in events if isinstance(e, SectionDone | SectionError)}
    assert isinstance(ends["first"], SectionDone)
    assert isinstance(ends["second"], SectionError)
    assert ends["second"].code == ErrorCode.TIMEOUT
    assert elapsed < 5  # not the budget's 60 s window
    assert len(completion_records(simulator)) == 1  # the second never went upstream


def test_closing_a_run_that_waits_on_the_budget_returns_at_once(
    make_client, executor, stats, simulator
):
    budget = LocalRateBudget(rpm=1, window_s=60)
    budget.cool_down(60)
    manager = ParallelStreamManager(make_client(), executor=executor, stats=stats, budget=budget)
    run = manager.stream([section("only", tokens=3)])
    assert next(run).type == "start"
    started = time.monotonic()
    run.close()
    assert time.monotonic() - started < 1
    assert completion_records(simulator) == []


def per_model(**limits: Any) -> PerModelRateBudget:
    def window(model: str, estimator: TokenEstimator) -> LocalRateBudget:
        return LocalRateBudget(**limits, estimator=estimator)

    return PerModelRateBudget(window)


def test_two_models_in_one_run_each_get_their_own_window(make_client, executor, stats, simulator):
    budget = per_model(rpm=2, window_s=60)
    manager = ParallelStreamManager(
        make_client(),
        executor=executor,
        stats=stats,
        budget=budget,
        options=RunOptions(deadline_s=1.0),
    )
    configs = [
        section("a1", tokens=3),
        section("a2", tokens=3),
        section("b1", tokens=3, model="gpt-4o-mini"),
        section("b2", tokens=3, model="gpt-4o-mini"),
        section("a3", tokens=3),
    ]
    ends = {
        e.section: e for e in manager.stream(configs) if isinstance(e, SectionDone | SectionError)
    }
    # gpt-4o's two starts are spent on a1 and a2; gpt-4o-mini's window still has room for both.
    assert {name for name, e in ends.items() if isinstance(e, SectionDone)} == {
        "a1",
        "a2",
        "b1",
        "b2",
    }
    assert ends["a3"].code == ErrorCode.TIMEOUT
    models = sorted(r["model"] for r in completion_records(simulator))
    assert models == ["gpt-4o", "gpt-4o", "gpt-4o-mini", "gpt-4o-mini"]


def test_a_429_for_one_model_cools_that_model_down_and_not_another(executor, simulator):
    simulator.configure(budget={"rpm_per_key": 1, "window_s": 60})
    budget = per_model(window_s=60)  # no limits of ours: only what the upstream says
    http_client = build_http_client(H2)
    http_client.event_hooks["response"].append(budget.response_hook(cap_s=60))
    client = openai.OpenAI(
        api_key=API_KEY, base_url=simulator.base_url, http_client=http_client, max_retries=0
    )
    messages = [{"role": "user", "content": "hello"}]
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError):  # the key's one request per window is spent
            client.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    finally:
        client.close()
        http_client.close()
    assert budget.for_model("gpt-4o").snapshot()["cooling_down_s"] > 0
    assert budget.for_model("gpt-4o-mini").snapshot()["cooling_down_s"] == 0
    assert budget.for_model("gpt-4o-mini").snapshot()["rpm"] == 1  # its own answer's headers
