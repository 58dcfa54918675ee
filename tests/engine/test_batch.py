"""Batch runs against the simulator: lazy pull, bounded look-ahead and reorder buffer, modes,
error policies, progress, and the rate budget A/B from the simulator's own records."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from backend_ai.errors import ConfigError
from backend_ai.streaming import StreamConfig
from backend_ai.streaming.batch import (
    BatchDone,
    BatchItem,
    BatchOptions,
    BatchProgress,
    BatchRunner,
    BatchStarted,
    ItemResult,
)
from backend_ai.streaming.budget import LocalRateBudget
from tests.support.waiting import wait_until

from .helpers import records_by_tag, threads_in_run_section
from .test_rate_budget import completion_records, max_in_any_window


def item(item_id: str, **sim: Any) -> BatchItem:
    max_tokens = sim.pop("max_tokens", 500)
    return BatchItem(
        item_id,
        StreamConfig(
            "x",
            f"Prompt {item_id}",
            max_tokens=max_tokens,
            extra_body={"sim": {"tag": item_id, **sim}},
        ),
    )


class Counting:
    """An endless generator of items that counts how many were pulled."""

    def __init__(self, **sim: Any) -> None:
        self.pulled = 0
        self.sim = sim

    def __iter__(self) -> Iterator[BatchItem]:
        for n in itertools.count():
            self.pulled = n + 1
            yield item(f"i{n}", **self.sim)


@pytest.fixture
def runner(client, executor, stats):
    made = []

    def make(**options: Any) -> BatchRunner:
        budget = options.pop("budget", None)
        r = BatchRunner(
            client, options=BatchOptions(**options), executor=executor, stats=stats, budget=budget
        )
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
    wait_until(lambda: not threads_in_run_section())


def results(events: list[Any]) -> list[ItemResult]:
    return [e for e in events if isinstance(e, ItemResult)]


def test_an_endless_generator_is_pulled_lazily_with_a_bounded_look_ahead(runner):
    source = Counting(tokens=3)
    run = runner(max_parallel=4, lookahead=2).run(source)
    got = 0
    worst = 0
    for event in run:
        if isinstance(event, ItemResult):
            got += 1
            assert event.ok, event
            worst = max(worst, source.pulled - got)
            if got == 40:
                break
    run.close()
    # pulled = delivered + in flight (<= 4) + look-ahead (<= 2)
    assert worst <= 4 + 2
    assert source.pulled <= 40 + 6


def test_as_completed_delivers_fast_items_before_a_slow_head_and_ordered_keeps_input_order(
    runner,
):
    items = [item("slow", ttft_ms=400), *(item(f"f{n}") for n in range(5))]
    as_completed = results(list(runner(max_parallel=6).run(items)))
    assert as_completed[-1].id == "slow"
    assert {r.id for r in as_completed} == {"slow", "f0", "f1", "f2", "f3", "f4"}
    ordered = results(list(runner(max_parallel=6, mode="ordered").run(items)))
    assert [r.id for r in ordered] == ["slow", "f0", "f1", "f2", "f3", "f4"]
    assert [r.index for r in ordered] == list(range(6))
    # Whole text per item, identical in both modes.
    assert {r.id: r.text for r in ordered} == {r.id: r.text for r in as_completed}
    assert all(r.text and r.finish_reason == "stop" and r.usage for r in ordered)


def test_ordered_stops_pulling_while_the_reorder_buffer_is_full(runner):
    def source() -> Iterator[BatchItem]:
        yield item("head", ttft_ms=600)
        for n in itertools.count():
            yield item(f"f{n}")

    pulled_at_head = None
    seen = []
    counter = {"pulled": 0}

    def counted() -> Iterator[BatchItem]:
        for it in source():
            counter["pulled"] += 1
            yield it

    run = runner(max_parallel=4, mode="ordered", reorder_window=10, lookahead=0).run(counted())
    for event in run:
        if isinstance(event, ItemResult):
            if pulled_at_head is None:
                pulled_at_head = counter["pulled"]
            seen.append(event.index)
            if len(seen) == 30:
                break
    run.close()
    assert seen == list(range(30))
    # While the head was slow, at most the window of items was pulled (look-ahead 0).
    assert pulled_at_head is not None
    assert pulled_at_head <= 10


def test_continue_policy_reports_the_failed_item_and_goes_on(runner, simulator):
    items = [item("a"), item("bad", status=500), item("b")]
    events = list(runner(on_error="continue").run(items))
    by_id = {r.id: r for r in results(events)}
    assert by_id["bad"].error is not None
    assert by_id["bad"].error.code == "upstream_error"
    assert by_id["a"].ok
    assert by_id["b"].ok
    done = events[-1]
    assert isinstance(done, BatchDone)
    assert (done.done, done.failed) == (2, 1)
    assert len(records_by_tag(simulator.stats())["bad"]) == 1


def test_retry_policy_retries_transient_failures_with_backoff_up_to_the_limit(runner, simulator):
    events = list(
        runner(on_error="retry", max_retries=2, retry_backoff_s=0.05).run(
            [item("bad", status=502), item("ok")]
        )
    )
    by_id = {r.id: r for r in results(events)}
    assert by_id["bad"].attempts == 3
    assert by_id["bad"].error is not None
    assert by_id["ok"].ok
    assert by_id["ok"].attempts == 1
    assert len(records_by_tag(simulator.stats())["bad"]) == 3


def test_retry_policy_does_not_retry_a_bad_request(runner, simulator):
    events = list(runner(on_error="retry").run([item("bad", status=400)]))
    (result,) = results(events)
    assert result.error is not None
    assert result.error.code == "bad_request"
    assert result.attempts == 1


def test_429_is_waited_out_and_retried_under_every_policy(runner, simulator):
    events = list(
        runner(on_error="continue").run(
            [item("limited", fail_first=2, attempt_key="k1", retry_after_ms=50)]
        )
    )
    (result,) = results(events)
    assert result.ok, result
    assert len(records_by_tag(simulator.stats())["limited"]) == 3


def test_fail_fast_cancels_the_rest_and_stops_pulling(runner):
    source = Counting(ttft_ms=300)

    def with_bad_first() -> Iterator[BatchItem]:
        yield item("bad", status=400)
        yield from source

    events = list(runner(on_error="fail_fast", max_parallel=4).run(with_bad_first()))
    done = events[-1]
    assert isinstance(done, BatchDone)
    assert done.cancelled
    codes = [r.error.code for r in results(events) if r.error]
    assert "bad_request" in codes
    assert source.pulled <= 4 + 4  # nothing more was pulled after the failure


def test_progress_events_are_rate_bounded_and_add_up(runner):
    items = [item(f"p{n}", ttft_ms=50) for n in range(40)]
    started = time.monotonic()
    events = list(runner(max_parallel=4, progress_interval_s=0.1).run(items))
    elapsed = time.monotonic() - started
    assert isinstance(events[0], BatchStarted)
    assert events[0].total == 40
    progress = [e for e in events if isinstance(e, BatchProgress)]
    assert 2 <= len(progress) <= elapsed / 0.1 + 2
    last = progress[-1]
    assert (last.done, last.failed, last.in_flight, last.total) == (40, 0, 0, 40)
    assert last.tokens == sum(r.usage.total_tokens for r in results(events))
    assert all(p.in_flight <= 4 for p in progress)


def test_invalid_items_end_with_bad_request_and_the_rest_goes_on(runner):
    events = list(runner().run([item("a"), 42, "a plain prompt"]))  # type: ignore[list-item]
    by_index = {r.index: r for r in results(events)}
    assert by_index[0].ok
    assert by_index[2].ok
    assert by_index[1].error is not None
    assert by_index[1].error.code == "bad_request"


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError):
        BatchOptions(mode="sideways")
    with pytest.raises(ConfigError):
        BatchOptions(max_parallel=0)


WINDOW_S = 1.0
RPM = 5


def test_batch_budget_ab_no_429_and_never_over_budget_with_it_429s_without(runner, simulator):
    simulator.configure(budget={"rpm_per_key": RPM, "window_s": WINDOW_S})
    items = [item(f"b{n}", tokens=3) for n in range(14)]
    with_budget = list(
        runner(max_parallel=8, budget=LocalRateBudget(rpm=RPM, window_s=WINDOW_S)).run(items)
    )
    records = completion_records(simulator)
    assert all(r.ok for r in results(with_budget))
    assert len(records) == 14
    assert [r["status"] for r in records].count(429) == 0
    assert max_in_any_window(records, WINDOW_S) <= RPM

    simulator.reset()
    simulator.configure(budget={"rpm_per_key": RPM, "window_s": WINDOW_S})
    without = list(runner(max_parallel=8).run(items))
    statuses = [r["status"] for r in completion_records(simulator)]
    assert statuses.count(429) >= 1
    # The 429 path still gets every item through (wait, retry, smaller concurrency).
    assert all(r.ok for r in results(without))


TPM = 1000


def test_batch_token_budget_keeps_every_later_window_within_the_tokens(runner, simulator):
    """Tokens are estimated (prompt characters, max_tokens) before the first answers and
    corrected by their usage: at most the first window may see a 429."""
    simulator.configure(budget={"tpm_per_key": TPM, "window_s": WINDOW_S})
    items = [item(f"t{n}", tokens=3, max_tokens=100) for n in range(24)]
    events = list(
        runner(max_parallel=8, budget=LocalRateBudget(tpm=TPM, window_s=WINDOW_S)).run(items)
    )
    assert all(r.ok for r in results(events))
    records = completion_records(simulator)
    first = min(r["t_start"] for r in records)
    later = [r for r in records if r["t_start"] > first + WINDOW_S]
    assert later
    assert not [r for r in later if r["status"] == 429]
    admitted_later = [r for r in later if r["status"] == 200]
    assert max_in_any_window(admitted_later, WINDOW_S, key="rate_tokens") <= TPM
    # 24 requests of ~110 tokens at 1000 per window: the budget spread them over windows.
    span = max(r["t_start"] for r in records) - first
    assert span >= 1.5 * WINDOW_S


def test_closing_a_batch_that_waits_on_the_budget_returns_at_once(runner, simulator):
    budget = LocalRateBudget(rpm=2, window_s=60)
    run = runner(budget=budget).run(item(f"w{n}", tokens=3) for n in range(10))
    got = []
    for event in run:
        if isinstance(event, ItemResult):
            got.append(event)
            if len(got) == 2:
                break
    # The third start waits ~60 s for the budget; closing the run must not.
    started = time.monotonic()
    run.close()
    assert time.monotonic() - started < 1
    assert len(completion_records(simulator)) == 2
