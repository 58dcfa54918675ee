"""ParallelStreamManager: several blocking OpenAI streams at once, merged into one event stream.

The consumer of a run is the caller's own thread (a WSGI request thread): ``stream()`` is a
plain generator. It submits section workers to the shared bounded executor, then loops on the
run's channel, yielding events as they arrive — everything queued when it wakes up goes out
together (``stream_batches``, ``stream_sse``: one write; at a model's pace after a short pause,
``RunOptions.flush_interval_s``) — and in the same loop keeps the run's timers: stall
timeouts, the run deadline, heartbeats and the rate-limit fallback schedule. No extra
thread watches a run, so a run costs only its section workers.

Whichever comes first — every section ended, the consumer closed the generator (a WSGI server
does that when the client goes away), or the deadline — ends the run and cancels whatever is
still open upstream; ``done`` is always the last event of a run that was not closed.

Rate limits: the first HTTP 429 switches the run to sequential for the sections that got it
and those not yet started: after the wait the upstream asked for (``retry-after-ms`` /
``Retry-After``, capped by ``max_retry_wait_s``), they run one at a time, each only when no
other section of the run is streaming. Sections already streaming go on. A section may take
``max_rate_limit_retries`` further 429s before it ends with ``rate_limited``. The SDK's own
retries are turned off (``max_retries=0``) for engine calls, so nothing is retried twice over:
the engine alone decides, and it never retries a section that already produced output.

With a rate budget (``budget=``, see ``budget.py``) a section starts only when the budget has
room for its estimated cost: the consumer asks without blocking and, told to wait, wakes up
when the budget said. The 429 fallback above stays as the safety net.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from typing import Any

import openai

from backend_ai.errors import LifecycleError
from backend_ai.streaming.budget import Permit, RateBudget, config_model
from backend_ai.streaming.channel import RunChannel
from backend_ai.streaming.config import (
    Mode,
    RunOptions,
    StreamConfig,
    validate_configs,
)
from backend_ai.streaming.events import (
    ErrorCode,
    Event,
    Heartbeat,
    RateLimitFallback,
    RunDone,
    RunStarted,
    SectionDone,
    SectionError,
)
from backend_ai.streaming.executor import (
    SectionExecutor,
    get_section_executor,
)
from backend_ai.streaming.ordering import make_orderer
from backend_ai.streaming.section_state import SectionState
from backend_ai.streaming.sse import encode_event
from backend_ai.streaming.stats import (
    SectionRecord,
    StreamStats,
    default_stats,
)
from backend_ai.streaming.upstream import redacted_traceback
from backend_ai.streaming.worker import RateLimited, run_section

__all__ = ["ParallelStreamManager", "create_parallel_stream"]

logger = logging.getLogger(__name__)

#: Longest the consumer sleeps between timer checks (stall, deadline, heartbeat, fallback).
_MAX_TICK_S = 0.25
#: The most events the consumer gathers before it hands them on (a bound on what it holds).
_MAX_BATCH_EVENTS = 256
#: How long closing a run waits for its cancelled workers to leave their threads.
_CANCEL_GRACE_S = 1.0


class ParallelStreamManager:
    """Runs the sections of each run in parallel over one OpenAI client.

    One manager per process is the intended use (it is thread-safe: every run keeps its own
    state); ``close()`` it at shutdown.
    """

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        options: RunOptions | None = None,
        executor: SectionExecutor | None = None,
        stats: StreamStats | None = None,
        budget: RateBudget | None = None,
    ) -> None:
        # The engine owns retries (see the module docstring), so the SDK's are switched off.
        self._client = client.with_options(max_retries=0)
        self._secrets = tuple(s for s in (getattr(client, "api_key", None),) if s)
        self._options = options or RunOptions()
        self._executor = executor
        self._stats = stats if stats is not None else default_stats
        self._budget = budget
        self._closed = False
        self._active: weakref.WeakSet[_Run] = weakref.WeakSet()

    @property
    def options(self) -> RunOptions:
        return self._options

    def close(self) -> None:
        """Refuse new runs and wind down the open ones; safe to call twice, and from a signal
        handler: it only sets flags. Each open run then cancels its sections (``cancelled``)
        on its own thread and ends with ``done`` (``cancelled=True``) at once. The shared
        executor and HTTP client are not the manager's to close.
        """
        self._closed = True
        for run in list(self._active):
            run.shut_down()

    def stream(
        self,
        configs: Iterable[StreamConfig],
        *,
        options: RunOptions | None = None,
        request_id: str | None = None,
    ) -> Generator[Event, None, None]:
        """Validate, then return the run's event generator (nothing starts until iterated)."""
        return self._open(configs, options=options, request_id=request_id).events()

    def stream_batches(
        self,
        configs: Iterable[StreamConfig],
        *,
        options: RunOptions | None = None,
        request_id: str | None = None,
    ) -> Generator[list[Event], None, None]:
        """Like ``stream``, in lists of the events that were ready together (the first list
        holds only ``start``): write each list at once to save a write per event."""
        return self._open(configs, options=options, request_id=request_id).batches()

    def _open(
        self,
        configs: Iterable[StreamConfig],
        *,
        options: RunOptions | None,
        request_id: str | None,
    ) -> _Run:
        if self._closed:
            raise LifecycleError("this ParallelStreamManager is closed")
        sections = validate_configs(configs)
        executor = self._executor or get_section_executor()
        if executor.closed:
            raise LifecycleError("the section executor is shut down")
        run = _Run(
            client=self._client,
            configs=sections,
            options=options or self._options,
            executor=executor,
            stats=self._stats,
            secrets=self._secrets,
            request_id=request_id or uuid.uuid4().hex,
            budget=self._budget,
        )
        self._active.add(run)
        return run

    def stream_sse(
        self,
        configs: Iterable[StreamConfig],
        *,
        options: RunOptions | None = None,
        request_id: str | None = None,
    ) -> Iterator[str]:
        """The run as ready SSE text (see ``sse.encode_event``): the frames of the events that
        were ready together come joined in one string, to be written at once."""
        return _encoded(self.stream_batches(configs, options=options, request_id=request_id))


def _encoded(batches: Generator[list[Event], None, None]) -> Generator[str, None, None]:
    try:
        for batch in batches:
            if len(batch) == 1:
                yield encode_event(batch[0])
            else:
                yield "".join([encode_event(event) for event in batch])
    finally:
        batches.close()


_SHUT_DOWN = object()


class _Run:
    """The state of one run, driven by its consumer's thread."""

    def __init__(
        self,
        *,
        client: openai.OpenAI,
        configs: tuple[StreamConfig, ...],
        options: RunOptions,
        executor: SectionExecutor,
        stats: StreamStats,
        secrets: tuple[str, ...],
        request_id: str,
        budget: RateBudget | None = None,
    ) -> None:
        self.client = client
        self.budget = budget
        self.permits: dict[str, Permit] = {}
        #: When the budget said a start may be possible again (0: not waiting on it).
        self.budget_wait_until = 0.0
        self.options = options
        self.executor = executor
        self.stats = stats
        self.secrets = secrets
        self.request_id = request_id
        self.states = {c.section_name: SectionState(config=c) for c in configs}
        self.names = tuple(self.states)
        self.channel = RunChannel(options.queue_size, options.backpressure_timeout_s)
        self.pending: deque[SectionState] = deque(self.states.values())
        self.fallback: deque[SectionState] = deque()
        self.resume_at = 0.0
        self.running: dict[str, Future[Any]] = {}
        self.completed: list[str] = []
        self.failed: list[str] = []
        #: Sections whose end event has left the orderer (control path only, never per chunk).
        self.ends_out: set[str] = set()
        self.shutting_down = False
        tick_candidates = [_MAX_TICK_S]
        for value in (options.heartbeat_s, options.stall_timeout_s):
            if value is not None:
                tick_candidates.append(value / 4)
        self.tick_s = max(0.005, min(tick_candidates))

    # -- scheduling ---------------------------------------------------------------------

    def _submit(self, state: SectionState) -> None:
        state.running = True
        state.last_activity = 0.0  # stall timing starts when a worker picks the section up
        try:
            future = self.executor.submit(
                run_section, self.client, state, self.channel, self.options, self.secrets
            )
        except LifecycleError:
            # The pool shut down under this run: the section ends here, the run still ends.
            future = Future()
            future.set_result(None)
            self._end_unstarted(state)
        else:
            future.add_done_callback(functools.partial(self._on_future_done, state))
        self.running[state.name] = future

    def _on_future_done(self, state: SectionState, future: Future[Any]) -> None:
        if future.cancelled():  # executor shutdown, or _cancel_all: its worker never ran
            self._end_unstarted(state)

    def _end_unstarted(self, state: SectionState) -> None:
        """Post the end item of a section that will never run (its worker would have)."""
        self.channel.put_control(
            SectionError(
                section=state.name,
                code=ErrorCode.CANCELLED,
                message="the server is shutting down",
                chunks=state.chunks,
            )
        )

    def _schedule(self, now: float) -> None:
        self.budget_wait_until = 0.0
        if self.shutting_down:
            return
        limit = self.options.max_parallel or len(self.states)
        while self.pending and not self.fallback and len(self.running) < limit:
            if not self._admitted(self.pending[0], now):
                return
            self._submit(self.pending.popleft())
        if (
            self.fallback
            and not self.running
            and now >= self.resume_at
            and self._admitted(self.fallback[0], now)
        ):
            self._submit(self.fallback.popleft())

    def _admitted(self, state: SectionState, now: float) -> bool:
        """Whether the rate budget lets this section start now (always, without a budget)."""
        if self.budget is None:
            return True
        result = self.budget.try_acquire(self.budget.estimator.estimate_config(state.config))
        if isinstance(result, Permit):
            self.permits[state.name] = result
            return True
        self.budget_wait_until = now + result
        return False

    def _settle(self, name: str, event: object) -> None:
        permit = self.permits.pop(name, None)
        if permit is not None and self.budget is not None:
            self.budget.settle(permit, getattr(event, "usage", None))

    def _on_rate_limited(self, item: RateLimited, now: float) -> Event:
        state = self.states[item.section]
        state.rate_limited += 1
        if state.rate_limited > self.options.max_rate_limit_retries:
            return SectionError(
                section=item.section,
                code=ErrorCode.RATE_LIMITED,
                message=item.message or "rate limited by the upstream",
                chunks=state.chunks,
            )
        state.next_attempt()
        if state.rate_limited == 1:
            # First 429 of this section: everything not yet started queues up behind it.
            moved = [state, *self.pending]
            self.pending.clear()
            self.fallback.extend(moved)
        else:
            moved = [state]
            self.fallback.appendleft(state)
        self.resume_at = max(self.resume_at, now + item.wait_s)
        return RateLimitFallback(
            sections=tuple(s.name for s in moved), wait_ms=round(item.wait_s * 1000, 3)
        )

    def shut_down(self) -> None:
        """Ask the run to end now (server shutdown); called from any thread, never blocks."""
        self.shutting_down = True
        self.channel.put_control(_SHUT_DOWN)

    def _stop_for_shutdown(self) -> list[Event]:
        """On the consumer's thread: cancel what runs, end what never started."""
        for name in self.running:
            self.states[name].cancel(ErrorCode.CANCELLED, "the server is shutting down")
        ended: list[Event] = [
            SectionError(
                section=state.name,
                code=ErrorCode.CANCELLED,
                message="the server is shutting down",
                chunks=state.chunks,
            )
            for state in (*self.pending, *self.fallback)
        ]
        self.pending.clear()
        self.fallback.clear()
        return ended

    # -- timers -------------------------------------------------------------------------

    def _check_timers(self, now: float, deadline: float | None) -> None:
        if deadline is not None and now >= deadline:
            for name in self.running:
                self.states[name].cancel(ErrorCode.TIMEOUT, "the run deadline passed")
            return
        stall = self.options.stall_timeout_s
        if stall is None:
            return
        for name in self.running:
            state = self.states[name]
            idle = now - state.last_activity
            if state.cancel_code is None and state.last_activity and idle >= stall:
                state.cancel(ErrorCode.TIMEOUT, f"no data from the upstream for {stall:g} s")

    def _expire_waiting(self) -> list[Event]:
        """At the deadline, sections that never started end with ``timeout`` too."""
        ended: list[Event] = []
        for state in (*self.pending, *self.fallback):
            ended.append(
                SectionError(
                    section=state.name,
                    code=ErrorCode.TIMEOUT,
                    message="the run deadline passed before this section could start",
                    chunks=state.chunks,
                )
            )
        self.pending.clear()
        self.fallback.clear()
        return ended

    def _note_ends(self, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, SectionDone | SectionError):
                self.ends_out.add(event.section)

    def _end_open_sections(
        self, push: Callable[[Event], Sequence[Event]], started: float
    ) -> list[Event]:
        """After a bug in the run loop: an ``internal`` end for every section without an end.

        A section counts as ended only once its end event has left the orderer: one booked
        but lost with the failure ends with ``internal`` too. Each end goes through the
        orderer, which then releases what it held back for that section; if the orderer is
        what failed, the ends go out directly. Either way every section is ended once and
        ``done`` can follow.
        """
        out: list[Event] = []

        def send(event: Event) -> None:
            try:
                out.extend(push(event))
            except Exception:  # the orderer itself failed: the event goes out as it is
                out.append(event)

        # The chunks already posted go out first, so each end's chunk count is what was sent;
        # the control items left behind are superseded by the ends below.
        while (item := self.channel.get(0.0)) is not None:
            if type(item) is list:
                for chunk in item:
                    if chunk.section not in self.ends_out:
                        send(chunk)
        for name in self.names:
            if name in self.ends_out:
                continue
            event = SectionError(
                section=name,
                code=ErrorCode.INTERNAL,
                message="internal error",
                chunks=self.states[name].chunks,
            )
            if name in self.completed:  # its end was booked but never reached the client
                self.completed.remove(name)
            if name not in self.failed:
                self._record(event, started)
            send(event)
        return out

    # -- the consumer loop ----------------------------------------------------------------

    def events(self) -> Generator[Event, None, None]:
        """The run's events one by one (see ``batches``)."""
        batches = self.batches()
        try:
            for batch in batches:
                yield from batch
        finally:
            batches.close()

    def batches(self) -> Generator[list[Event], None, None]:
        """The run's events, in lists: everything that was ready when the consumer woke up.

        The consumer drains the channel before it waits again, so a burst — or the chunks of
        several sections that arrived while it was writing — goes out as one list, which the
        SSE layer writes as one write. At a model's pace that alone gathers nothing: each
        chunk arrives on its own and wakes the consumer. So, while chunks keep coming closer
        together than ``flush_interval_s``, the consumer pauses that long after each write of
        chunks (``RunChannel.pause``), and one wake-up and one write carry several.
        """
        options = self.options
        started = time.monotonic()
        deadline = None if options.deadline_s is None else started + options.deadline_s
        heartbeat_s = options.heartbeat_s
        orderer = make_orderer(options.mode, self.names)
        push = orderer.push
        interleaved = options.mode is Mode.INTERLEAVED
        get = self.channel.get
        pause = self.channel.pause
        flush_s = options.flush_interval_s
        monotonic = time.monotonic
        finished = False
        wrote_chunks = False
        hold_until = last_chunk_write = 0.0
        hold_paid = False
        out_batch: list[Event] = []
        emit = out_batch.extend
        try:
            yield [RunStarted(request_id=self.request_id, sections=self.names, mode=options.mode)]
            try:
                last_out = now = monotonic()
                next_tick = now + self.tick_s
                self._schedule(now)
                while True:
                    past_deadline = deadline is not None and now >= deadline
                    if now >= next_tick or past_deadline:
                        self._check_timers(now, deadline)
                        if past_deadline:
                            for event in self._expire_waiting():
                                self._record(event, started)
                                out = push(event)
                                if out:
                                    last_out = now
                                    emit(out)
                                    self._note_ends(out)
                        if heartbeat_s is not None and now - last_out >= heartbeat_s:
                            last_out = now
                            out_batch.append(Heartbeat())
                        next_tick = now + self.tick_s
                    if not self.running or 0 < self.budget_wait_until <= now:
                        self._schedule(now)  # e.g. the rate-limit or budget wait just ended
                    if not (self.pending or self.fallback or self.running):
                        break
                    wake_at = next_tick
                    if deadline is not None and not past_deadline:
                        wake_at = min(wake_at, deadline)
                    if self.fallback and not self.running:
                        wake_at = min(wake_at, self.resume_at)
                    if self.budget_wait_until:
                        wake_at = min(wake_at, self.budget_wait_until)
                    item = get(0.0) if len(out_batch) < _MAX_BATCH_EVENTS else None
                    if item is None:
                        if out_batch:
                            yield out_batch
                            out_batch = []
                            emit = out_batch.extend
                            if wrote_chunks and flush_s:
                                wrote_chunks = False
                                written_at = monotonic()
                                # Hold only while chunks come closer together than the interval
                                # (or the last hold caught some): when they come farther apart,
                                # each write carries one arrival anyway, and a hold would only
                                # add a wake-up that finds nothing.
                                if hold_paid or written_at - last_chunk_write < flush_s:
                                    hold_until = written_at + flush_s
                                last_chunk_write = written_at
                        # Within the hold, new chunks wait for the next write: the consumer
                        # pauses, woken early only by a control item or a full channel (or its
                        # own timers). After a quiet spell the hold is over, so the first chunk
                        # goes out as soon as it comes.
                        while hold_until:
                            remaining = min(hold_until, wake_at) - monotonic()
                            if remaining <= 0:
                                break
                            pause(remaining)
                            item = get(0.0)
                            if item is not None:
                                hold_paid = True
                                break
                        if item is None:
                            if hold_until and monotonic() >= hold_until:
                                hold_until = 0.0
                                hold_paid = False
                            if not hold_until:
                                item = get(max(0.0, wake_at - monotonic()))
                    now = monotonic()
                    if item is None:
                        continue
                    if type(item) is list:
                        # The hot path: a batch of one section's chunks.
                        if interleaved:
                            last_out = now
                            emit(item)
                            wrote_chunks = True
                            continue
                        for chunk in item:
                            out = push(chunk)
                            if out:
                                last_out = now
                                emit(out)
                                wrote_chunks = True
                        continue
                    if item is _SHUT_DOWN:
                        ended = self._stop_for_shutdown()
                        for event in ended:
                            self._record(event, started)
                    else:
                        ended = [self._on_control(item, now, started)]
                        self._schedule(now)
                    for event in ended:
                        out = push(event)
                        if out:
                            last_out = now
                            emit(out)
                            self._note_ends(out)
            except Exception as exc:  # a bug in the run loop: end the open sections and the run
                logger.error(
                    "run %s: the run loop failed (%s); its open sections end with 'internal'",
                    self.request_id,
                    type(exc).__name__,
                )
                logger.debug("%s", redacted_traceback(exc, self.secrets))
                self._cancel_all()
                out_batch = [*out_batch, *self._end_open_sections(push, started)]
            finished = True
            out_batch.append(
                RunDone(
                    request_id=self.request_id,
                    duration_ms=round((monotonic() - started) * 1000, 3),
                    completed=tuple(self.completed),
                    failed=tuple(self.failed),
                    cancelled=self.shutting_down,
                )
            )
            yield out_batch
        finally:
            if not finished:
                self._cancel_all()

    def _on_control(self, item: object, now: float, started: float) -> Event:
        """Book-keeping for a non-chunk item; returns the event to send, if any."""
        if isinstance(item, RateLimited):
            self.running.pop(item.section, None)
            self._settle(item.section, item)
            if self.budget is not None:
                self.budget.cool_down(
                    item.wait_s, model=config_model(self.states[item.section].config)
                )
            event = self._on_rate_limited(item, now)
            if isinstance(event, SectionError):
                self._record(event, started)
            return event
        if isinstance(item, SectionDone | SectionError):
            self.running.pop(item.section, None)
            self._settle(item.section, item)
            self.states[item.section].running = False
            self._record(item, started)
        assert isinstance(item, Event), f"unexpected item on a run channel: {item!r}"
        return item

    def _record(self, event: Event, started: float) -> None:
        if isinstance(event, SectionDone):
            self.completed.append(event.section)
            self.stats.record(
                event.section,
                SectionRecord(event.duration_ms, event.ttft_ms, event.chars, ok=True),
            )
        elif isinstance(event, SectionError):
            self.failed.append(event.section)
            elapsed = (time.monotonic() - started) * 1000
            self.stats.record(event.section, SectionRecord(elapsed, None, 0, ok=False))

    def _cancel_all(self) -> None:
        """The consumer went away: stop every section and wait briefly for their threads."""
        self.pending.clear()
        self.fallback.clear()
        futures = []
        for name, future in self.running.items():
            self.states[name].cancel(ErrorCode.CANCELLED)
            # A section still queued for a pool thread never starts; only running ones are
            # waited for.
            if not future.cancel():
                futures.append(future)
        if futures:
            _done, not_done = wait(futures, timeout=_CANCEL_GRACE_S)
            if not_done:
                logger.warning(
                    "run %s: %d section worker(s) still running %.1f s after cancel",
                    self.request_id,
                    len(not_done),
                    _CANCEL_GRACE_S,
                )
        # Each future's done-callback refers back to this run: dropping the futures lets
        # reference counting free the run now instead of a full garbage collection later.
        self.running.clear()


def create_parallel_stream(
    client: openai.OpenAI, configs: Iterable[StreamConfig], **options: Any
) -> Iterator[str]:
    """SSE frames of one run: ``for chunk in create_parallel_stream(client, configs): yield chunk``.

    Keyword arguments are ``RunOptions`` fields (``mode="ordered"``, ``deadline_s=...``).
    Configs and options are validated here, before anything starts.
    """
    manager = ParallelStreamManager(client, options=RunOptions(**options))
    return manager.stream_sse(configs)
