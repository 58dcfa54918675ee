"""The proactive rate budget: wait for room instead of sending a request into a 429.

Providers limit an API key by requests per minute and tokens per minute. A request's tokens
are counted when it arrives, by its prompt plus its ``max_tokens`` (OpenAI documents it so),
which is why its cost can be estimated before it is sent and its start delayed until the
window has room for it. Every upstream answer also says where the key stands
(``x-ratelimit-limit-*``, ``x-ratelimit-remaining-*``, ``x-ratelimit-reset-*``), so other
users of the same key are seen too; and a 429 that still gets through starts a cool-down that
every caller sharing the budget honours.

The interface, :class:`RateBudget`, is small so that it can be implemented on other stores
(one process here, a Redis server for several processes and hosts). Implementations provide
five primitives — :meth:`RateBudget.try_acquire`, :meth:`RateBudget.adjust`,
:meth:`RateBudget.observe`, :meth:`RateBudget.cool_down`, :meth:`RateBudget.snapshot` — and
inherit the rest: the blocking :meth:`RateBudget.acquire` (cancellable, with a deadline),
:meth:`RateBudget.settle` with the usage the upstream reported, header parsing, the token
estimate, and an httpx2 response hook.

Why the window arithmetic is written here rather than taken from ``limits`` or
``pyrate-limiter``: both count weighted hits in a window well, but neither can change the
weight of a hit after the fact (the correction from ``usage``), take in limits and usage that
another party reports (the response headers), or wait in a way another thread can cancel at
once — pyrate-limiter's delay is a plain sleep, ``limits`` only answers yes or no. What is
left once those are added is a log of the starts of the last window, which is a few lines.

The in-process implementation, :class:`LocalRateBudget`, is a moving-window log (the strategy
``limits`` calls "moving window"): a start is admitted when the starts of the last
``window_s`` seconds, plus it, stay within both limits, so no window of that length — not only
the aligned ones — ever holds more than the budget. Each entry lasts ``window_s + margin_s``:
the margin (a fiftieth of the window, at least 0.25 s) covers the time between a start here
and its arrival upstream.

Providers limit each model of a key on its own, so a request's estimate names its model, and
an answer's headers and 429 are taken in for the model its request named (the response hook
reads it from the request's JSON body). :class:`PerModelRateBudget` keeps one window of any
implementation per model, made on first use and bounded in number; a single window
(``LocalRateBudget`` or ``RedisRateBudget`` alone) counts every model together.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backend_ai.errors import BackendAIError, ConfigError
from backend_ai.streaming.rate_limit import DEFAULT_RETRY_WAIT_S, retry_wait_s

if TYPE_CHECKING:
    import httpx2

    from backend_ai.streaming.config import StreamConfig
    from backend_ai.streaming.events import TokenUsage

__all__ = [
    "ANY_MODEL",
    "BudgetCancelled",
    "BudgetTimeout",
    "LocalRateBudget",
    "ObservedLimits",
    "PerModelRateBudget",
    "Permit",
    "RateBudget",
    "TokenEstimate",
    "TokenEstimator",
    "config_model",
    "parse_duration",
    "parse_rate_limit_headers",
    "request_model",
    "tighter_limit",
]

#: The model of a request that names none; also the window shared by models past the bound.
ANY_MODEL = "*"
#: Characters per prompt token before any usage was seen (OpenAI's rule of thumb for English).
DEFAULT_CHARS_PER_TOKEN = 4.0
#: Longest single sleep of ``acquire``: the budget can change under a waiter (a settle frees
#: tokens, headers arrive), so a waiter looks again at least this often.
_MAX_WAIT_SLICE_S = 0.25


class BudgetTimeout(BackendAIError):
    """``acquire`` reached its deadline before the budget had room."""


class BudgetCancelled(BackendAIError):
    """``acquire`` was cancelled while it waited."""


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    """What a request will count against tokens/min, before it is sent."""

    prompt_tokens: int
    #: The completion part the upstream counts up front: the request's ``max_tokens``.
    completion_tokens: int
    #: The prompt's size in characters, kept to learn characters per token from ``usage``.
    prompt_chars: int = 0
    #: The model the request names: providers limit each model on its own.
    model: str = ANY_MODEL

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Permit:
    """One admitted start; give it back to :meth:`RateBudget.settle` when the request ended."""

    id: int
    estimate: TokenEstimate
    acquired_at: float

    @property
    def tokens(self) -> int:
        return self.estimate.total


@dataclass(frozen=True, slots=True)
class ObservedLimits:
    """What one upstream answer said about the key's limits (None: not in the headers)."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__slots__)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float | None:
    """Seconds in OpenAI's reset format (``6m0s``, ``1s``, ``120ms``, ``1h2m3.5s``), or in plain
    seconds (``0.5``); None for anything else."""
    raw = text.strip().lower()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(raw):
        if match.start() != position:
            return None
        position = match.end()
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
    return total if position == len(raw) else None


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _header_duration(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    return None if raw is None else parse_duration(raw)


def parse_rate_limit_headers(headers: Mapping[str, str]) -> ObservedLimits:
    """The ``x-ratelimit-*`` headers of one response; malformed values are ignored."""
    lowered = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}
    return ObservedLimits(
        limit_requests=_header_int(lowered, "x-ratelimit-limit-requests"),
        limit_tokens=_header_int(lowered, "x-ratelimit-limit-tokens"),
        remaining_requests=_header_int(lowered, "x-ratelimit-remaining-requests"),
        remaining_tokens=_header_int(lowered, "x-ratelimit-remaining-tokens"),
        reset_requests_s=_header_duration(lowered, "x-ratelimit-reset-requests"),
        reset_tokens_s=_header_duration(lowered, "x-ratelimit-reset-tokens"),
    )


class TokenEstimator:
    """Estimates a request's tokens from its text; learns characters per token from ``usage``.

    The learned ratio is total characters over total prompt tokens of the recent requests,
    each older one weighing 10 % less: prompts alike give the exact ratio from the first
    answer on (an average of ratios would creep towards it and stay under for a while, and an
    estimate under the truth is what earns 429s), and one odd prompt does not swing it.
    No lock: a lost update between two threads only delays learning by one sample.
    """

    def __init__(self, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> None:
        if not chars_per_token > 0:
            raise ConfigError(f"chars_per_token must be positive, got {chars_per_token!r}")
        self.chars_per_token = chars_per_token
        self._chars = 0.0
        self._tokens = 0.0

    def estimate(self, prompt_chars: int, max_tokens: int, model: str = ANY_MODEL) -> TokenEstimate:
        prompt_tokens = math.ceil(prompt_chars / self.chars_per_token) if prompt_chars else 0
        return TokenEstimate(prompt_tokens, max(0, max_tokens), prompt_chars, model)

    def estimate_config(self, config: StreamConfig) -> TokenEstimate:
        """The estimate for one section: its messages' text plus its ``max_tokens``, counted
        against the model the request names."""
        body = dict(config.extra_body or {})
        messages = body.get("messages")
        chars = _messages_chars(messages if isinstance(messages, list) else config.messages())
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens", config.max_tokens))
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            max_tokens = config.max_tokens
        return self.estimate(chars, max_tokens, config_model(config))

    def learn(self, prompt_chars: int, prompt_tokens: int) -> None:
        if prompt_chars <= 0 or prompt_tokens <= 0:
            return
        self._chars = 0.9 * self._chars + prompt_chars
        self._tokens = 0.9 * self._tokens + prompt_tokens
        self.chars_per_token = self._chars / self._tokens


def config_model(config: StreamConfig) -> str:
    """The model a section's request names: its ``extra_body`` may name another one."""
    model = (config.extra_body or {}).get("model")
    return model if isinstance(model, str) and model else config.model


def _messages_chars(messages: list[Any]) -> int:
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    total += len(part["text"])
    return total


class RateBudget(ABC):
    """Requests/min and tokens/min shared by every run that holds the same budget."""

    def __init__(self, estimator: TokenEstimator | None = None) -> None:
        self.estimator = estimator or TokenEstimator()

    # -- the primitives an implementation provides ----------------------------------------

    @abstractmethod
    def try_acquire(self, estimate: TokenEstimate) -> Permit | float:
        """Admit one start now and return its permit, or return the seconds to wait before
        asking again (never blocks)."""

    @abstractmethod
    def adjust(self, permit: Permit, tokens: int) -> None:
        """Replace what an admitted start counts against tokens/min (the estimate was off)."""

    @abstractmethod
    def observe(self, limits: ObservedLimits, *, model: str | None = None) -> None:
        """Take in what an upstream answer for ``model`` said about the key's limits and what
        is left (``model`` None: an answer whose model is unknown)."""

    @abstractmethod
    def cool_down(self, seconds: float, *, model: str | None = None) -> None:
        """The upstream answered 429 for ``model``: nobody holding this budget starts a
        request for it for ``seconds`` (``model`` None: for any model)."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The current limits and usage, for logs, stats and tests."""

    # -- built on them ------------------------------------------------------------------------

    def acquire(
        self,
        estimate: TokenEstimate,
        *,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> Permit:
        """Wait until the budget admits a start; raise ``BudgetTimeout`` after ``timeout``
        seconds, ``BudgetCancelled`` as soon as ``cancel`` is set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = cancel if cancel is not None else threading.Event()
        while True:
            if cancel is not None and cancel.is_set():
                raise BudgetCancelled("cancelled while waiting for the rate budget")
            result = self.try_acquire(estimate)
            if isinstance(result, Permit):
                return result
            wait = min(result, _MAX_WAIT_SLICE_S)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BudgetTimeout(f"the rate budget had no room within {timeout} s")
                wait = min(wait, left)
            waiter.wait(max(wait, 0.001))

    def settle(self, permit: Permit, usage: TokenUsage | None = None) -> None:
        """The request ended; with ``usage``, correct its count and the prompt estimate.

        The upstream counted the prompt plus ``max_tokens`` when the request arrived, so the
        correction replaces only the prompt part: the characters-per-token guess by the prompt
        tokens the upstream reported.
        """
        if usage is None or usage.prompt_tokens <= 0:
            return
        self.estimator.learn(permit.estimate.prompt_chars, usage.prompt_tokens)
        actual = usage.prompt_tokens + permit.estimate.completion_tokens
        if actual != permit.tokens:
            self.adjust(permit, actual)

    def close(self) -> None:  # noqa: B027 - most budgets hold nothing to close
        """Release what the budget holds (connections); the default holds nothing."""

    def observe_response(
        self,
        status: int,
        headers: Mapping[str, str],
        *,
        cap_s: float,
        model: str | None = None,
    ) -> None:
        """Take in one upstream response to a request for ``model``: its limit headers, and a
        429's cool-down."""
        limits = parse_rate_limit_headers(headers)
        if not limits.empty:
            self.observe(limits, model=model)
        if status == 429:
            self.cool_down(retry_wait_s(headers, cap_s=cap_s), model=model)

    def response_hook(self, *, cap_s: float = 60.0) -> Callable[[httpx2.Response], None]:
        """An httpx2 ``response`` event hook that feeds every answer of a client to this budget:
        ``http_client.event_hooks["response"].append(budget.response_hook())``. The model an
        answer counts for is the one its request's JSON body names."""

        def hook(response: httpx2.Response) -> None:
            status, headers = response.status_code, response.headers
            if status != 429 and not any(k.startswith("x-ratelimit-") for k in headers):
                return  # nothing to learn: skip reading the request body
            model = request_model(response.request)
            self.observe_response(status, headers, cap_s=cap_s, model=model)

        return hook


def request_model(request: httpx2.Request) -> str | None:
    """The ``model`` a request's JSON body names, or None (no body, not JSON, streamed)."""
    try:
        body = json.loads(request.content)
    except Exception:  # httpx2.RequestNotRead for a streamed body, or not JSON
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) and model else None


class PerModelRateBudget(RateBudget):
    """One budget per model, as providers limit each model of a key on its own.

    Each model's window is made by ``factory(model, estimator)`` on its first use and kept;
    all of them share this budget's token estimator. The number of windows is bounded by
    ``max_models``: models past the bound share one more window (``ANY_MODEL``), which can
    only make them wait longer, never send more. An answer whose model is unknown (``model``
    None) counts for every window: a 429 of unknown origin cools every model down.
    ``on_close`` releases what the windows share (a Redis connection).
    """

    def __init__(
        self,
        factory: Callable[[str, TokenEstimator], RateBudget],
        *,
        max_models: int = 32,
        estimator: TokenEstimator | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(estimator)
        if isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1:
            raise ConfigError(f"max_models must be a positive integer, got {max_models!r}")
        self._factory = factory
        self._max_models = max_models
        self._lock = threading.Lock()
        self._budgets: dict[str, RateBudget] = {}
        self._on_close = on_close

    def for_model(self, model: str) -> RateBudget:
        """The window of ``model``, made on first use (the shared one past the bound)."""
        budget = self._budgets.get(model)
        if budget is not None:
            return budget
        with self._lock:
            budget = self._budgets.get(model)
            if budget is None:
                if len(self._budgets) >= self._max_models:
                    model = ANY_MODEL
                    budget = self._budgets.get(model)
                if budget is None:
                    budget = self._factory(model, self.estimator)
                    self._budgets[model] = budget
            return budget

    def _targets(self, model: str | None) -> list[RateBudget]:
        if model is not None:
            return [self.for_model(model)]
        with self._lock:
            return list(self._budgets.values())

    def try_acquire(self, estimate: TokenEstimate) -> Permit | float:
        return self.for_model(estimate.model).try_acquire(estimate)

    def adjust(self, permit: Permit, tokens: int) -> None:
        self.for_model(permit.estimate.model).adjust(permit, tokens)

    def observe(self, limits: ObservedLimits, *, model: str | None = None) -> None:
        for budget in self._targets(model):
            budget.observe(limits, model=model)

    def cool_down(self, seconds: float, *, model: str | None = None) -> None:
        for budget in self._targets(model):
            budget.cool_down(seconds, model=model)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            budgets = dict(self._budgets)
        return {"models": {model: budget.snapshot() for model, budget in budgets.items()}}

    def close(self) -> None:
        with self._lock:
            budgets = list(self._budgets.values())
        for budget in budgets:
            budget.close()
        if self._on_close is not None:
            self._on_close()  # what the windows share, e.g. their Redis connection


@dataclass(slots=True)
class _Entry:
    expires_at: float
    tokens: int


@dataclass(slots=True)
class _Remote:
    """What the upstream last said is left, counted down by the starts made since."""

    requests: int | None = None
    tokens: int | None = None
    requests_until: float = 0.0
    tokens_until: float = 0.0
    started_requests: int = 0
    started_tokens: int = 0


@dataclass(slots=True)
class _State:
    log: deque[_Entry] = field(default_factory=deque)
    by_permit: dict[int, _Entry] = field(default_factory=dict)
    used_tokens: int = 0
    cool_until: float = 0.0
    next_id: int = 1
    admitted: int = 0
    waited: int = 0
    remote: _Remote = field(default_factory=_Remote)
    learned_rpm: int | None = None
    learned_tpm: int | None = None


class LocalRateBudget(RateBudget):
    """The budget of one process: a moving window of starts, shared by its threads.

    ``rpm`` / ``tpm`` of None mean "no configured limit"; a limit the upstream reports in
    ``x-ratelimit-limit-*`` then applies, and the smaller of the two when both exist.
    """

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        window_s: float = 60.0,
        margin_s: float | None = None,
        estimator: TokenEstimator | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(estimator)
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
        if not (isinstance(window_s, int | float) and math.isfinite(window_s) and window_s > 0):
            raise ConfigError(f"window_s must be a positive number, got {window_s!r}")
        self.rpm = rpm
        self.tpm = tpm
        self.window_s = float(window_s)
        # Time between a start here and its arrival upstream, where the upstream's window runs:
        # it does not shrink with the window, so it is at least a quarter of a second.
        self.margin_s = max(0.25, self.window_s / 50) if margin_s is None else float(margin_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _State()

    # -- arithmetic, under the lock ---------------------------------------------------------

    def _limits(self) -> tuple[int | None, int | None]:
        state = self._state
        return tighter_limit(self.rpm, state.learned_rpm), tighter_limit(
            self.tpm, state.learned_tpm
        )

    def _expire(self, now: float) -> None:
        state = self._state
        log = state.log
        while log and log[0].expires_at <= now:
            entry = log.popleft()
            state.used_tokens -= entry.tokens
        if len(state.by_permit) > 2 * len(log) + 64:
            live = {id(entry) for entry in log}
            state.by_permit = {
                pid: entry for pid, entry in state.by_permit.items() if id(entry) in live
            }
        remote = state.remote
        if remote.requests is not None and now >= remote.requests_until:
            remote.requests = None
        if remote.tokens is not None and now >= remote.tokens_until:
            remote.tokens = None

    def _wait_for(self, cost: int, now: float) -> float:
        """Seconds until a start of ``cost`` tokens fits (0: now)."""
        state = self._state
        waits = [state.cool_until - now]
        rpm, tpm = self._limits()
        log = state.log
        if rpm is not None and len(log) + 1 > rpm:
            # The oldest starts must leave the window until one more fits.
            waits.append(log[len(log) - rpm].expires_at - now)
        if tpm is not None:
            cost = min(cost, tpm)  # a request bigger than the whole budget waits for an empty one
            excess = state.used_tokens + cost - tpm
            if excess > 0:
                freed = 0
                for entry in log:
                    freed += entry.tokens
                    if freed >= excess:
                        waits.append(entry.expires_at - now)
                        break
        remote = state.remote
        if remote.requests is not None and remote.started_requests + 1 > remote.requests:
            waits.append(remote.requests_until - now)
        if remote.tokens is not None and remote.started_tokens + cost > remote.tokens:
            waits.append(remote.tokens_until - now)
        return max(0.0, *waits)

    # -- the primitives -------------------------------------------------------------------------

    def try_acquire(self, estimate: TokenEstimate) -> Permit | float:
        with self._lock:
            now = self._clock()
            self._expire(now)
            state = self._state
            wait = self._wait_for(estimate.total, now)
            if wait > 0:
                state.waited += 1
                return wait
            entry = _Entry(now + self.window_s + self.margin_s, estimate.total)
            state.log.append(entry)
            state.used_tokens += entry.tokens
            permit = Permit(state.next_id, estimate, now)
            state.by_permit[permit.id] = entry
            state.next_id += 1
            state.admitted += 1
            state.remote.started_requests += 1
            state.remote.started_tokens += entry.tokens
            return permit

    def adjust(self, permit: Permit, tokens: int) -> None:
        with self._lock:
            state = self._state
            entry = state.by_permit.pop(permit.id, None)
            if entry is None or entry.expires_at <= self._clock():  # it left the window
                return
            tokens = max(0, tokens)
            state.used_tokens += tokens - entry.tokens
            entry.tokens = tokens

    def observe(self, limits: ObservedLimits, *, model: str | None = None) -> None:
        # One window for whichever model (``PerModelRateBudget`` keeps one per model).
        with self._lock:
            now = self._clock()
            state = self._state
            if limits.limit_requests:
                state.learned_rpm = limits.limit_requests
            if limits.limit_tokens:
                state.learned_tpm = limits.limit_tokens
            self._expire(now)
            rpm, tpm = self._limits()
            remote = state.remote
            # What the upstream says is left matters only when it is less than what this
            # process's own window leaves, i.e. when someone else uses the key too. It then
            # holds until its reset time, counted down by the starts made here after it.
            if limits.remaining_requests is not None and limits.reset_requests_s is not None:
                local_left = None if rpm is None else rpm - len(state.log)
                if local_left is None or limits.remaining_requests < local_left:
                    remote.requests = limits.remaining_requests
                    remote.requests_until = now + limits.reset_requests_s
                    remote.started_requests = 0
                else:
                    remote.requests = None
            if limits.remaining_tokens is not None and limits.reset_tokens_s is not None:
                local_left = None if tpm is None else tpm - state.used_tokens
                if local_left is None or limits.remaining_tokens < local_left:
                    remote.tokens = limits.remaining_tokens
                    remote.tokens_until = now + limits.reset_tokens_s
                    remote.started_tokens = 0
                else:
                    remote.tokens = None

    def cool_down(self, seconds: float, *, model: str | None = None) -> None:
        if not (math.isfinite(seconds) and seconds > 0):
            seconds = DEFAULT_RETRY_WAIT_S
        with self._lock:
            state = self._state
            state.cool_until = max(state.cool_until, self._clock() + seconds)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            self._expire(now)
            state = self._state
            rpm, tpm = self._limits()
            return {
                "rpm": rpm,
                "tpm": tpm,
                "window_s": self.window_s,
                "requests_in_window": len(state.log),
                "tokens_in_window": state.used_tokens,
                "cooling_down_s": round(max(0.0, state.cool_until - now), 3),
                "admitted": state.admitted,
                "waits": state.waited,
                "chars_per_token": round(self.estimator.chars_per_token, 3),
            }


def tighter_limit(a: int | None, b: int | None) -> int | None:
    """The smaller of two limits, where None means "no limit" (so the other one holds)."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
