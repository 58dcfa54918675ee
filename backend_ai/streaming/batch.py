"""Batch runs: thousands of completions from any iterable, as they complete, in constant memory.

A page run (``manager.py``) streams a handful of sections chunk by chunk; a batch run streams
many items, each delivered whole (``ItemResult``) when it ends. It is built from the same
parts — each attempt is one ``worker.run_section`` on the shared ``SectionExecutor``, posting to
one ``RunChannel`` per run, with a ``SectionState`` to cancel it — and the consumer is, as for a
page, the caller's own thread iterating ``BatchRunner.run(...)``; no extra thread watches a run.

Memory does not grow with the input:

* items are pulled lazily from the iterable (a generator of unknown length is fine), only when
  a start is possible, plus at most ``lookahead`` pulled ahead;
* at most ``max_parallel`` items are in flight, each holding only its own text;
* ``ordered`` mode keeps a reorder buffer of finished items waiting for an earlier one, and
  stops pulling while the distance between the oldest unfinished item and the next item to
  pull is ``reorder_window``: the buffer can never hold more than that.

Errors, per item (``on_error``): ``continue`` ends the item with its error and goes on;
``retry`` retries transient failures (5xx, connection errors, timeouts, a stream cut short,
429) with exponential backoff and full jitter, at most ``max_retries`` times; ``fail_fast``
ends the run at the first failed item, cancelling what is in flight. An item is delivered only
whole, when it ended, so a retry never repeats output the caller already got.

429s are handled for every policy the way page runs handle them: the item waits for the
``Retry-After`` the upstream asked for and tries again (``max_rate_limit_retries`` times), the
run starts nothing new until then, and its concurrency halves and then grows back by one per
success (additive increase, multiplicative decrease), so a run without a budget settles at a
rate the upstream accepts. With a ``RateBudget`` every start first waits for room in it.

Progress events (``BatchProgress``) go out at most every ``progress_interval_s``.
"""

from __future__ import annotations

import functools
import heapq
import logging
import random
import time
import uuid
import weakref
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar

import openai

from backend_ai.errors import ConfigError, LifecycleError
from backend_ai.streaming.budget import Permit, RateBudget, config_model
from backend_ai.streaming.channel import RunChannel
from backend_ai.streaming.config import RunOptions, StreamConfig
from backend_ai.streaming.events import (
    ContentChunk,
    ErrorCode,
    Event,
    SectionDone,
    SectionError,
    TokenUsage,
)
from backend_ai.streaming.executor import (
    SectionExecutor,
    get_section_executor,
)
from backend_ai.streaming.section_state import SectionState
from backend_ai.streaming.stats import (
    SectionRecord,
    StreamStats,
    default_stats,
)
from backend_ai.streaming.worker import RateLimited, run_section

__all__ = [
    "BatchDone",
    "BatchItem",
    "BatchMode",
    "BatchOptions",
    "BatchProgress",
    "BatchRunner",
    "BatchStarted",
    "ErrorPolicy",
    "ItemError",
    "ItemResult",
]

logger = logging.getLogger(__name__)

_MAX_TICK_S = 0.25
_CANCEL_GRACE_S = 1.0
#: Channel items handled in one pass of the loop before it schedules and checks its timers.
_MAX_DRAIN = 512
#: Failures worth another attempt under the ``retry`` policy.
TRANSIENT_CODES = frozenset(
    {
        ErrorCode.UPSTREAM_ERROR,
        ErrorCode.CONNECTION_ERROR,
        ErrorCode.TIMEOUT,
        ErrorCode.INCOMPLETE,
        ErrorCode.RATE_LIMITED,
    }
)


class BatchMode(StrEnum):
    AS_COMPLETED = "as_completed"  # each item the moment it ends
    ORDERED = "ordered"  # input order; finished items wait in a bounded buffer for earlier ones


class ErrorPolicy(StrEnum):
    CONTINUE = "continue"
    RETRY = "retry"
    FAIL_FAST = "fail_fast"


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One input: an id the caller chooses (it comes back on the result) and its request."""

    id: str
    config: StreamConfig


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemError:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class BatchStarted(Event):
    type: ClassVar[str] = "batch_start"
    request_id: str
    mode: str
    #: Items in the input when it has a length, else None.
    total: int | None


@dataclass(frozen=True, slots=True)
class ItemResult(Event):
    """One item, whole: its full text and finish reason, or its error."""

    type: ClassVar[str] = "item"
    id: str
    #: Position in the input, from 0.
    index: int
    text: str
    finish_reason: str | None
    usage: TokenUsage | None
    error: ItemError | None
    attempts: int
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class BatchProgress(Event):
    type: ClassVar[str] = "progress"
    done: int
    failed: int
    in_flight: int
    total: int | None
    items_per_s: float
    tokens: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class BatchDone(Event):
    """Always the last event of a run that was not closed by its consumer."""

    type: ClassVar[str] = "done"
    request_id: str
    done: int
    failed: int
    tokens: int
    duration_ms: float
    #: The run stopped early: ``fail_fast``, or the server is shutting down.
    cancelled: bool = False


# -- options --------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_seconds(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """How one batch run behaves; validated at construction."""

    max_parallel: int = 16
    mode: BatchMode = BatchMode.AS_COMPLETED
    on_error: ErrorPolicy = ErrorPolicy.CONTINUE
    #: Further attempts of one item under the ``retry`` policy.
    max_retries: int = 3
    retry_backoff_s: float = 0.5
    retry_backoff_max_s: float = 20.0
    #: 429s one item may take (any policy) before it fails with ``rate_limited``.
    max_rate_limit_retries: int = 5
    max_retry_wait_s: float = 30.0
    #: Items pulled from the input ahead of a free slot (None: ``max_parallel``).
    lookahead: int | None = None
    #: ``ordered``: most items between the oldest unfinished one and the next one pulled
    #: (None: four times ``max_parallel``). Bounds the reorder buffer.
    reorder_window: int | None = None
    progress_interval_s: float = 0.5
    #: One attempt's longest run; None: no limit.
    item_timeout_s: float | None = 300.0
    stall_timeout_s: float | None = 30.0
    queue_size: int = 1024
    backpressure_timeout_s: float = 30.0
    include_usage: bool = True

    def __post_init__(self) -> None:
        for name, kind in (("mode", BatchMode), ("on_error", ErrorPolicy)):
            try:
                object.__setattr__(self, name, kind(getattr(self, name)))
            except ValueError:
                allowed = ", ".join(m.value for m in kind)
                raise ConfigError(
                    f"{name} must be one of {allowed}, got {getattr(self, name)!r}"
                ) from None
        _check_int("max_parallel", self.max_parallel, 1)
        _check_int("max_retries", self.max_retries, 0)
        _check_int("max_rate_limit_retries", self.max_rate_limit_retries, 0)
        _check_int("lookahead", self.lookahead, 0, allow_none=True)
        _check_int("reorder_window", self.reorder_window, 1, allow_none=True)
        _check_int("queue_size", self.queue_size, 1)
        for name in (
            "retry_backoff_s",
            "retry_backoff_max_s",
            "max_retry_wait_s",
            "progress_interval_s",
            "backpressure_timeout_s",
        ):
            _check_seconds(name, getattr(self, name))
        _check_seconds("item_timeout_s", self.item_timeout_s, allow_none=True)
        _check_seconds("stall_timeout_s", self.stall_timeout_s, allow_none=True)

    @property
    def effective_lookahead(self) -> int:
        return self.max_parallel if self.lookahead is None else self.lookahead

    @property
    def effective_reorder_window(self) -> int:
        return 4 * self.max_parallel if self.reorder_window is None else self.reorder_window

    def run_options(self) -> RunOptions:
        """What each attempt's worker needs (the run's own timers live in the batch loop)."""
        return RunOptions(
            max_parallel=self.max_parallel,
            deadline_s=None,
            stall_timeout_s=self.stall_timeout_s,
            heartbeat_s=None,
            queue_size=self.queue_size,
            backpressure_timeout_s=self.backpressure_timeout_s,
            max_retry_wait_s=self.max_retry_wait_s,
            include_usage=self.include_usage,
        )


# -- the runner -----------------------------------------------------------------------------


class BatchRunner:
    """Runs batches over one OpenAI client; thread-safe, one per process is the intended use."""

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        options: BatchOptions | None = None,
        executor: SectionExecutor | None = None,
        stats: StreamStats | None = None,
        budget: RateBudget | None = None,
        stats_name: str = "batch",
    ) -> None:
        # The run owns retries, so the SDK's are switched off (as for page runs).
        self._client = client.with_options(max_retries=0)
        self._secrets = tuple(s for s in (getattr(client, "api_key", None),) if s)
        self._options = options or BatchOptions()
        self._executor = executor
        self._stats = stats if stats is not None else default_stats
        self._budget = budget
        self._stats_name = stats_name
        self._closed = False
        self._active: weakref.WeakSet[_BatchRun] = weakref.WeakSet()

    @property
    def options(self) -> BatchOptions:
        return self._options

    def close(self) -> None:
        """Refuse new runs and end the open ones (their in-flight items end ``cancelled``)."""
        self._closed = True
        for run in list(self._active):
            run.shut_down()

    def run(
        self,
        items: Iterable[BatchItem | StreamConfig | str],
        *,
        options: BatchOptions | None = None,
        total: int | None = None,
        request_id: str | None = None,
        template: StreamConfig | None = None,
    ) -> Generator[Event, None, None]:
        """The run's event generator: ``BatchStarted``, then ``ItemResult`` and
        ``BatchProgress`` events, then ``BatchDone``. Nothing is pulled until it is iterated.

        An item is a ``BatchItem``, a ``StreamConfig`` (its ``section_name`` is its id) or a
        prompt string (its index is its id; ``template`` gives model, max_tokens and so on).
        ``total`` is reported in progress events; by default ``len(items)`` when it has one.
        """
        if self._closed:
            raise LifecycleError("this BatchRunner is closed")
        executor = self._executor or get_section_executor()
        if executor.closed:
            raise LifecycleError("the section executor is shut down")
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        run = _BatchRun(
            runner=self,
            items=iter(items),
            options=options or self._options,
            executor=executor,
            total=total,
            request_id=request_id or uuid.uuid4().hex,
            template=template or StreamConfig("item", "-"),
        )
        self._active.add(run)
        return run.events()


_SHUT_DOWN = object()


@dataclass(slots=True)
class _Item:
    index: int
    id: str
    config: StreamConfig
    attempts: int = 0
    rate_limited: int = 0
    first_started: float = 0.0
    started: float = 0.0
    state: SectionState | None = None
    future: Future[Any] | None = None
    permit: Permit | None = None
    text: list[str] = field(default_factory=list)
    #: An input that could not become a request; it ends at once with this error.
    invalid: str | None = None


class _BatchRun:
    """One batch run, driven by its consumer's thread."""

    def __init__(
        self,
        *,
        runner: BatchRunner,
        items: Iterator[Any],
        options: BatchOptions,
        executor: SectionExecutor,
        total: int | None,
        request_id: str,
        template: StreamConfig,
    ) -> None:
        self.client = runner._client
        self.secrets = runner._secrets
        self.stats = runner._stats
        self.stats_name = runner._stats_name
        self.budget = runner._budget
        self.source = items
        self.options = options
        self.run_options = options.run_options()
        self.executor = executor
        self.total = total
        self.request_id = request_id
        self.template = template
        self.channel = RunChannel(options.queue_size, options.backpressure_timeout_s)
        self.exhausted = False
        self.pulled = 0
        self.ready: deque[_Item] = deque()
        self.retries: list[tuple[float, int, _Item]] = []
        self.running: dict[str, _Item] = {}
        self.limit = options.max_parallel
        self.limit_credit = 0
        self.resume_at = 0.0
        self.budget_wait_until = 0.0
        self.stopping = False
        self.shutting_down = False
        self.cancelled = False
        # ordered mode: index of the oldest item not yet delivered, and finished later ones
        self.head = 0
        self.finished: dict[int, ItemResult] = {}
        self.done = 0
        self.failed = 0
        self.tokens = 0
        self.rng = random.Random()
        tick = [_MAX_TICK_S]
        if options.stall_timeout_s is not None:
            tick.append(options.stall_timeout_s / 4)
        self.tick_s = max(0.005, min(tick))

    # -- input ----------------------------------------------------------------------------

    def _make_item(self, index: int, raw: Any) -> _Item:
        name = str(index)
        try:
            if isinstance(raw, BatchItem):
                if not isinstance(raw.id, str) or not isinstance(raw.config, StreamConfig):
                    raise TypeError("a BatchItem needs a str id and a StreamConfig")
                return _Item(index, raw.id, replace(raw.config, section_name=name))
            if isinstance(raw, StreamConfig):
                return _Item(index, raw.section_name, replace(raw, section_name=name))
            if isinstance(raw, str):
                return _Item(index, name, replace(self.template, section_name=name, prompt=raw))
            raise TypeError(f"an item must be a BatchItem, StreamConfig or str, got {type(raw)}")
        except (TypeError, ConfigError) as exc:
            item_id = getattr(raw, "id", None)
            item = _Item(index, item_id if isinstance(item_id, str) else name, self.template)
            item.invalid = str(exc)
            return item

    def _may_pull(self) -> bool:
        if self.exhausted or self.stopping:
            return False
        if self.options.mode is BatchMode.ORDERED:
            return self.pulled - self.head < self.options.effective_reorder_window
        return True

    def _pull(self) -> _Item | None:
        if not self._may_pull():
            return None
        try:
            raw = next(self.source)
        except StopIteration:
            self.exhausted = True
            return None
        index = self.pulled
        self.pulled += 1
        return self._make_item(index, raw)

    # -- scheduling -----------------------------------------------------------------------

    def _next_candidate(self, now: float) -> tuple[_Item | None, bool]:
        """The next item to start and whether it came from the retry queue."""
        if self.retries and self.retries[0][0] <= now:
            return heapq.heappop(self.retries)[2], True
        if self.ready:
            return self.ready.popleft(), False
        return self._pull(), False

    def _fill(self, now: float) -> list[Event]:
        """Start what may start; returns results of items that ended without starting."""
        self.budget_wait_until = 0.0
        out: list[Event] = []
        if self.stopping:
            return out
        while len(self.running) < self.limit and now >= self.resume_at:
            item, from_retry = self._next_candidate(now)
            if item is None:
                break
            if item.invalid is not None:
                out.extend(self._finish(item, None, ErrorCode.BAD_REQUEST, item.invalid, now))
                continue
            if self.budget is not None:
                result = self.budget.try_acquire(self.budget.estimator.estimate_config(item.config))
                if not isinstance(result, Permit):
                    self.budget_wait_until = now + result
                    if from_retry:
                        heapq.heappush(self.retries, (now, item.index, item))
                    else:
                        self.ready.appendleft(item)
                    break
                item.permit = result
            self._submit(item, now)
        while len(self.ready) < self.options.effective_lookahead:
            item = self._pull()
            if item is None:
                break
            self.ready.append(item)
        return out

    def _submit(self, item: _Item, now: float) -> None:
        state = SectionState(config=item.config)
        item.state = state
        item.attempts += 1
        item.started = now
        if not item.first_started:
            item.first_started = now
        item.text.clear()
        self.running[item.config.section_name] = item
        try:
            future = self.executor.submit(
                run_section, self.client, state, self.channel, self.run_options, self.secrets
            )
        except LifecycleError:
            future = Future()
            future.set_result(None)
            self._post_unstarted(state)
        else:
            future.add_done_callback(functools.partial(self._on_future_done, state))
        item.future = future

    def _on_future_done(self, state: SectionState, future: Future[Any]) -> None:
        if future.cancelled():
            self._post_unstarted(state)

    def _post_unstarted(self, state: SectionState) -> None:
        self.channel.put_control(
            SectionError(
                section=state.name,
                code=ErrorCode.CANCELLED,
                message="the server is shutting down",
            )
        )

    def shut_down(self) -> None:
        """End the run now (server shutdown); any thread, never blocks."""
        self.shutting_down = True
        self.channel.put_control(_SHUT_DOWN)

    # -- ends of attempts -------------------------------------------------------------------

    def _settle(self, item: _Item, usage: TokenUsage | None) -> None:
        if item.permit is not None and self.budget is not None:
            self.budget.settle(item.permit, usage)
        item.permit = None

    def _on_end(self, end: object, now: float) -> list[Event]:
        if isinstance(end, RateLimited):
            item = self.running.pop(end.section, None)
            if item is None:
                return []
            self._settle(item, None)
            return self._on_rate_limited(item, end, now)
        assert isinstance(end, SectionDone | SectionError)
        item = self.running.pop(end.section, None)
        if item is None:
            return []
        if isinstance(end, SectionDone):
            self._settle(item, end.usage)
            self.limit_credit += 1
            if self.limit < self.options.max_parallel and self.limit_credit >= self.limit:
                self.limit += 1
                self.limit_credit = 0
            return self._finish(item, end, None, None, now)
        self._settle(item, None)
        if (
            self.options.on_error is ErrorPolicy.RETRY
            and end.code in TRANSIENT_CODES
            and item.attempts <= self.options.max_retries
            and not self.stopping
            and not (item.state is not None and item.state.cancel_code is ErrorCode.CANCELLED)
        ):
            self._schedule_retry(item, now, self._backoff(item.attempts))
            return []
        return self._finish(item, None, end.code, end.message, now)

    def _on_rate_limited(self, item: _Item, end: RateLimited, now: float) -> list[Event]:
        item.rate_limited += 1
        self.limit = max(1, self.limit // 2)
        self.limit_credit = 0
        if self.budget is not None:
            self.budget.cool_down(end.wait_s, model=config_model(item.config))
        if item.rate_limited <= self.options.max_rate_limit_retries and not self.stopping:
            self.resume_at = max(self.resume_at, now + end.wait_s)
            item.attempts -= 1  # a refused request is not an attempt of the item's own
            self._schedule_retry(item, now, end.wait_s)
            return []
        return self._finish(item, None, ErrorCode.RATE_LIMITED, end.message, now)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt - 1))]."""
        options = self.options
        ceiling = min(options.retry_backoff_max_s, options.retry_backoff_s * 2 ** (attempt - 1))
        return self.rng.uniform(0.0, ceiling)

    def _schedule_retry(self, item: _Item, now: float, delay: float) -> None:
        heapq.heappush(self.retries, (now + delay, item.index, item))

    def _finish(
        self,
        item: _Item,
        done: SectionDone | None,
        code: ErrorCode | None,
        message: str | None,
        now: float,
    ) -> list[Event]:
        duration_ms = round((now - item.first_started) * 1000, 3) if item.first_started else 0.0
        if done is not None:
            result = ItemResult(
                id=item.id,
                index=item.index,
                text="".join(item.text),
                finish_reason=done.finish_reason,
                usage=done.usage,
                error=None,
                attempts=item.attempts,
                duration_ms=duration_ms,
            )
            self.done += 1
            if done.usage is not None:
                self.tokens += done.usage.total_tokens
            self.stats.record(
                self.stats_name, SectionRecord(done.duration_ms, done.ttft_ms, done.chars)
            )
        else:
            assert code is not None
            result = ItemResult(
                id=item.id,
                index=item.index,
                text="",
                finish_reason=None,
                usage=None,
                error=ItemError(code.value, message or code.value),
                attempts=item.attempts,
                duration_ms=duration_ms,
            )
            self.failed += 1
            self.stats.record(self.stats_name, SectionRecord(duration_ms, None, 0, ok=False))
            if self.options.on_error is ErrorPolicy.FAIL_FAST and code is not ErrorCode.CANCELLED:
                self._stop(cancelled=True)
        item.text = []
        return self._deliver(result)

    def _deliver(self, result: ItemResult) -> list[Event]:
        if self.options.mode is BatchMode.AS_COMPLETED:
            return [result]
        self.finished[result.index] = result
        out: list[Event] = []
        while self.head in self.finished:
            out.append(self.finished.pop(self.head))
            self.head += 1
        return out

    def _stop(self, *, cancelled: bool) -> None:
        """Pull nothing more and cancel what runs; the run ends when their ends are in."""
        if self.stopping:
            return
        self.stopping = True
        self.cancelled = self.cancelled or cancelled
        for item in self.running.values():
            if item.state is not None:
                item.state.cancel(ErrorCode.CANCELLED, "the batch was stopped")

    def _drop_waiting(self, now: float) -> list[Event]:
        """Items pulled but never started end ``cancelled`` when the run stops."""
        out: list[Event] = []
        waiting = [*self.ready, *(entry[2] for entry in self.retries)]
        self.ready.clear()
        self.retries.clear()
        for item in sorted(waiting, key=lambda it: it.index):
            out.extend(self._finish(item, None, ErrorCode.CANCELLED, "the batch was stopped", now))
        return out

    # -- timers -----------------------------------------------------------------------------

    def _check_timers(self, now: float) -> None:
        options = self.options
        for item in self.running.values():
            state = item.state
            if state is None or state.cancel_code is not None:
                continue
            if options.item_timeout_s is not None and now - item.started >= options.item_timeout_s:
                limit = options.item_timeout_s
                state.cancel(ErrorCode.TIMEOUT, f"the item ran longer than {limit:g} s")
                continue
            stall = options.stall_timeout_s
            if stall is not None and state.last_activity and now - state.last_activity >= stall:
                state.cancel(ErrorCode.TIMEOUT, f"no data from the upstream for {stall:g} s")

    def _progress(self, now: float, started: float) -> BatchProgress:
        elapsed = now - started
        finished = self.done + self.failed
        return BatchProgress(
            done=self.done,
            failed=self.failed,
            in_flight=len(self.running),
            total=self.total,
            items_per_s=round(finished / elapsed, 3) if elapsed > 0 else 0.0,
            tokens=self.tokens,
            elapsed_s=round(elapsed, 3),
        )

    # -- the consumer loop --------------------------------------------------------------------

    def _idle(self) -> bool:
        return not (self.running or self.ready or self.retries) and (
            self.exhausted or self.stopping
        )

    def events(self) -> Generator[Event, None, None]:
        monotonic = time.monotonic
        get = self.channel.get
        started = monotonic()
        progress_every = self.options.progress_interval_s
        finished = False
        try:
            yield BatchStarted(
                request_id=self.request_id, mode=self.options.mode.value, total=self.total
            )
            now = monotonic()
            next_tick = now + self.tick_s
            next_progress = now + progress_every
            while True:
                if self.stopping and (self.ready or self.retries):
                    yield from self._drop_waiting(now)
                yield from self._fill(now)
                if self._idle():
                    break
                if now >= next_tick:
                    self._check_timers(now)
                    next_tick = now + self.tick_s
                if now >= next_progress:
                    yield self._progress(now, started)
                    next_progress = now + progress_every
                wake_at = min(next_tick, next_progress)
                if self.budget_wait_until:
                    wake_at = min(wake_at, self.budget_wait_until)
                if self.retries:
                    wake_at = min(wake_at, self.retries[0][0])
                if self.resume_at > now:
                    wake_at = min(wake_at, self.resume_at)
                item = get(max(0.0, wake_at - now))
                now = monotonic()
                drained = 0
                while item is not None:
                    if type(item) is list:
                        self._on_chunks(item)
                    elif item is _SHUT_DOWN:
                        self._stop(cancelled=True)
                    elif isinstance(item, SectionDone | SectionError | RateLimited):
                        yield from self._on_end(item, now)
                    # Drain what is already there before scheduling again (a bounded pass, so
                    # timers and progress still run under a steady flood).
                    drained += 1
                    item = get(0) if self.running and drained < _MAX_DRAIN else None
                now = monotonic()
            # ordered mode: everything has ended, so the buffer has already been flushed
            assert not self.finished
            yield self._progress(monotonic(), started)
            finished = True
            yield BatchDone(
                request_id=self.request_id,
                done=self.done,
                failed=self.failed,
                tokens=self.tokens,
                duration_ms=round((monotonic() - started) * 1000, 3),
                cancelled=self.cancelled,
            )
        finally:
            if not finished:
                self._cancel_all()

    def _on_chunks(self, chunks: list[ContentChunk]) -> None:
        item = self.running.get(chunks[0].section)
        if item is not None:
            item.text.extend(chunk.content for chunk in chunks)

    def _cancel_all(self) -> None:
        """The consumer went away: stop every attempt and wait briefly for their threads."""
        self.stopping = True
        futures = []
        for item in self.running.values():
            if item.state is not None:
                item.state.cancel(ErrorCode.CANCELLED)
            self._settle(item, None)
            if item.future is not None and not item.future.cancel():
                futures.append(item.future)
        if futures:
            _done, not_done = wait(futures, timeout=_CANCEL_GRACE_S)
            if not_done:
                logger.warning(
                    "batch %s: %d worker(s) still running %.1f s after cancel",
                    self.request_id,
                    len(not_done),
                    _CANCEL_GRACE_S,
                )
