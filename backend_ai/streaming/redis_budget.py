"""The rate budget on Redis: every process on every host that shares an upstream and a model
waits for the same window, instead of each one spending the whole limit.

A provider's limit belongs to the organisation. With ``LocalRateBudget`` each gunicorn worker on
each host budgets alone, so N processes send up to N times the limit into it. ``RedisRateBudget``
keeps the same moving-window log (see ``budget.py``: a start is admitted when the starts of the
last window, plus it, stay within requests/min and tokens/min; each start lasts
``window_s + margin_s``), the limits learned from ``x-ratelimit-*`` headers, what the upstream
says is left, and the 429 cool-down in Redis, under one key prefix per upstream base URL and
model. Redis's clock (``TIME``) is the only clock, so hosts with skewed clocks agree.

Why Lua scripts rather than ``limits`` or ``pyrate-limiter`` on Redis: both keep a weighted
window on Redis, but an admission here must check two limits, the shared cool-down and the
upstream's remaining counts together and record the start in one step — with two limiters a
start can take a request slot and then be refused tokens — and a start's weight must be
corrected after the fact from the reported ``usage``, which neither can do. Each operation is
therefore one short script, which Redis runs atomically; redis-py's ``register_script`` sends it
by SHA and reloads it when a restarted Redis has forgotten it.

Redis trouble never breaks a stream. Every call has a short socket timeout and no retries; on
any Redis error the budget switches to a ``LocalRateBudget`` of this process (same limits, fed
the same headers and cool-downs all along, so it starts out knowing what the upstream last
said), logs it once, tells ``on_fallback``, and tries Redis again after a backoff that grows
with each failure (redis-py's exponential backoff with jitter). While it is down each process
budgets alone, and a Redis that comes back empty has forgotten the current window: the
upstream's headers and the 429 fallback of the engine are the safety net for that window.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from backend_ai.errors import ConfigError
from backend_ai.streaming.budget import (
    ANY_MODEL,
    LocalRateBudget,
    ObservedLimits,
    Permit,
    RateBudget,
    TokenEstimate,
    TokenEstimator,
    tighter_limit,
)
from backend_ai.streaming.rate_limit import DEFAULT_RETRY_WAIT_S

__all__ = ["DEFAULT_REDIS_TIMEOUT_S", "KEY_PREFIX", "RedisLink", "RedisRateBudget", "key_part"]

logger = logging.getLogger(__name__)

#: A budget call waits at most this long for Redis before the process budgets on its own: the
#: call sits in front of a section's start, so a slow Redis must cost milliseconds, not seconds.
DEFAULT_REDIS_TIMEOUT_S = 0.25
KEY_PREFIX = "backend_ai:budget:"

# Shared by every script: Redis's clock in ms, reading a field, dropping expired starts.
# KEYS[1] log (sorted set: start -> expiry ms), KEYS[2] tokens (hash: start -> tokens),
# KEYS[3] meta (hash: used, cool_until, learned_*, remote counts, admitted, waits).
_PRELUDE = """
local log, tok, meta = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function num(field)
  return tonumber(redis.call('HGET', meta, field) or '')
end
local function arg(i)
  local v = tonumber(ARGV[i] or '')
  if v == nil or v <= 0 then return nil end
  return v
end
local function smaller(a, b)
  if a == nil then return b end
  if b == nil then return a end
  return math.min(a, b)
end
local function expire()
  local gone = redis.call('ZRANGEBYSCORE', log, '-inf', now)
  if #gone > 0 then
    local freed = 0
    for _, m in ipairs(gone) do
      freed = freed + (tonumber(redis.call('HGET', tok, m)) or 0)
      redis.call('HDEL', tok, m)
    end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now)
    redis.call('HINCRBY', meta, 'used', -freed)
  end
  local ru = num('rem_req_until')
  if ru and now >= ru then redis.call('HDEL', meta, 'rem_req', 'rem_req_until', 'started_req') end
  local tu = num('rem_tok_until')
  if tu and now >= tu then redis.call('HDEL', meta, 'rem_tok', 'rem_tok_until', 'started_tok') end
end
local function touch(ms)
  for _, k in ipairs(KEYS) do
    if redis.call('PTTL', k) < ms then redis.call('PEXPIRE', k, ms) end
  end
end
local function limits(cfg_rpm, cfg_tpm)
  return smaller(cfg_rpm, num('learned_rpm')), smaller(cfg_tpm, num('learned_tpm'))
end
"""

# ARGV: rpm, tpm (0: none), life ms, cost, member. Returns {1, 0} or {0, wait ms}.
_ACQUIRE = (
    _PRELUDE
    + """
local life, cost, member = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
expire()
local rpm, tpm = limits(arg(1), arg(2))
local wait = 0
local cool = num('cool_until')
if cool and cool > now then wait = cool - now end
local count = redis.call('ZCARD', log)
if rpm and count + 1 > rpm then
  local e = redis.call('ZRANGE', log, count - rpm, count - rpm, 'WITHSCORES')
  wait = math.max(wait, tonumber(e[2]) - now)
end
local need = cost
if tpm then
  need = math.min(cost, tpm)
  local excess = (num('used') or 0) + need - tpm
  if excess > 0 then
    local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
    local freed = 0
    for i = 1, #entries, 2 do
      freed = freed + (tonumber(redis.call('HGET', tok, entries[i])) or 0)
      if freed >= excess then
        wait = math.max(wait, tonumber(entries[i + 1]) - now)
        break
      end
    end
  end
end
local rem_req, rem_tok = num('rem_req'), num('rem_tok')
if rem_req and (num('started_req') or 0) + 1 > rem_req then
  wait = math.max(wait, num('rem_req_until') - now)
end
if rem_tok and (num('started_tok') or 0) + need > rem_tok then
  wait = math.max(wait, num('rem_tok_until') - now)
end
if wait > 0 then
  redis.call('HINCRBY', meta, 'waits', 1)
  touch(life)
  return {0, wait}
end
redis.call('ZADD', log, now + life, member)
redis.call('HSET', tok, member, cost)
redis.call('HINCRBY', meta, 'used', cost)
redis.call('HINCRBY', meta, 'admitted', 1)
if rem_req then redis.call('HINCRBY', meta, 'started_req', 1) end
if rem_tok then redis.call('HINCRBY', meta, 'started_tok', cost) end
touch(life)
return {1, 0}
"""
)

# ARGV: member, tokens. Returns 1 when the start was still in the window.
_ADJUST = (
    _PRELUDE
    + """
expire()
local old = tonumber(redis.call('HGET', tok, ARGV[1]) or '')
if old == nil then return 0 end
local tokens = math.max(0, tonumber(ARGV[2]))
redis.call('HSET', tok, ARGV[1], tokens)
redis.call('HINCRBY', meta, 'used', tokens - old)
return 1
"""
)

# ARGV: rpm, tpm, life ms, limit req, limit tok, remaining req, reset req ms, remaining tok,
# reset tok ms ('' for "not in the headers").
_OBSERVE = (
    _PRELUDE
    + """
local function given(i) return tonumber(ARGV[i] or '') end
if arg(4) then redis.call('HSET', meta, 'learned_rpm', arg(4)) end
if arg(5) then redis.call('HSET', meta, 'learned_tpm', arg(5)) end
expire()
local rpm, tpm = limits(arg(1), arg(2))
local rem_req, reset_req, rem_tok, reset_tok = given(6), given(7), given(8), given(9)
if rem_req and reset_req then
  local left = nil
  if rpm then left = rpm - redis.call('ZCARD', log) end
  if left == nil or rem_req < left then
    redis.call('HSET', meta, 'rem_req', rem_req, 'rem_req_until', now + reset_req, 'started_req', 0)
  else
    redis.call('HDEL', meta, 'rem_req', 'rem_req_until', 'started_req')
  end
end
if rem_tok and reset_tok then
  local left = nil
  if tpm then left = tpm - (num('used') or 0) end
  if left == nil or rem_tok < left then
    redis.call('HSET', meta, 'rem_tok', rem_tok, 'rem_tok_until', now + reset_tok, 'started_tok', 0)
  else
    redis.call('HDEL', meta, 'rem_tok', 'rem_tok_until', 'started_tok')
  end
end
touch(math.max(tonumber(ARGV[3]), (reset_req or 0) + 1000, (reset_tok or 0) + 1000))
return 1
"""
)

# ARGV: cool-down ms, life ms.
_COOL_DOWN = (
    _PRELUDE
    + """
local until_ms = now + tonumber(ARGV[1])
local cool = num('cool_until')
if cool == nil or until_ms > cool then redis.call('HSET', meta, 'cool_until', until_ms) end
touch(math.max(tonumber(ARGV[2]), tonumber(ARGV[1]) + 1000))
return 1
"""
)

# Returns {now ms, starts in the window, meta as a flat field/value list}.
_SNAPSHOT = (
    _PRELUDE
    + """
expire()
return {now, redis.call('ZCARD', log), redis.call('HGETALL', meta)}
"""
)


class _Down(Exception):
    """Redis is unavailable for this call: the caller uses the local budget."""


class RedisLink:
    """One process's connection to the budget's Redis, shared by the windows of every model:
    the scripts, and whether Redis is reachable. An outage is therefore noticed, logged,
    counted and backed off from once, however many models are being budgeted.

    ``on_fallback(True)`` is called when this process starts budgeting on its own and
    ``on_fallback(False)`` when Redis answers again (once each per outage), for a metric.
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float = DEFAULT_REDIS_TIMEOUT_S,
        on_fallback: Callable[[bool], None] | None = None,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
    ) -> None:
        if not (math.isfinite(socket_timeout_s) and socket_timeout_s > 0):
            raise ConfigError(f"socket_timeout_s must be positive, got {socket_timeout_s!r}")
        try:  # the ``redis`` extra: only a budget shared through Redis needs it
            import redis
            from redis.backoff import ExponentialWithJitterBackoff
            from redis.retry import Retry
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] != "redis":
                raise
            raise ConfigError(
                "a rate budget shared through Redis needs the redis package: "
                "pip install 'backend-ai[redis]'"
            ) from None
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=Retry(ExponentialWithJitterBackoff(), 0),  # no retries: we fall back
            health_check_interval=0,
        )
        self.acquire = self._client.register_script(_ACQUIRE)
        self.adjust = self._client.register_script(_ADJUST)
        self.observe = self._client.register_script(_OBSERVE)
        self.cool_down = self._client.register_script(_COOL_DOWN)
        self.snapshot = self._client.register_script(_SNAPSHOT)
        self._on_fallback = on_fallback
        self._backoff = ExponentialWithJitterBackoff(base=backoff_base_s, cap=backoff_cap_s)
        self._lock = threading.Lock()
        self._down = False
        self._failures = 0
        self._retry_at = 0.0
        self.fallbacks = 0

    @property
    def up(self) -> bool:
        return not self._down

    def call(self, script: Any, keys: list[str], args: Sequence[str | int | float]) -> Any:
        """Run one script; ``_Down`` while Redis is unavailable or backing off."""
        with self._lock:
            if self._down:
                now = time.monotonic()
                if now < self._retry_at:
                    raise _Down
                # This call probes; the others stay local meanwhile instead of queueing on it.
                self._retry_at = now + self._backoff.compute(self._failures)
        try:
            result = script(keys=keys, args=list(args))
        except self._errors as exc:
            self._went_down(exc)
            raise _Down from None
        if self._down:
            self._came_back()
        return result

    def _went_down(self, exc: BaseException) -> None:
        with self._lock:
            self._failures += 1
            self._retry_at = time.monotonic() + self._backoff.compute(self._failures)
            if self._down:
                return
            self._down = True
            self.fallbacks += 1
        # Once per outage; never the URL, which may carry a password.
        logger.warning(
            "shared rate budget: Redis is unavailable (%s); this process budgets on its own "
            "until it answers again",
            type(exc).__name__,
        )
        self._notify(True)

    def _came_back(self) -> None:
        with self._lock:
            if not self._down:
                return
            self._down = False
            self._failures = 0
        logger.info("shared rate budget: Redis answers again; budgeting through it")
        self._notify(False)

    def _notify(self, down: bool) -> None:
        if self._on_fallback is not None:
            try:
                self._on_fallback(down)
            except Exception:  # a metric must never break a budget call
                logger.exception("on_fallback failed")

    def close(self) -> None:
        self._client.close()


class RedisRateBudget(RateBudget):
    """The budget of every process whose ``RedisRateBudget`` names the same Redis, upstream and
    model; falls back to a ``LocalRateBudget`` of this process while Redis is unavailable.

    ``link`` is a URL (this budget then has a ``RedisLink`` of its own, made with
    ``socket_timeout_s``, ``on_fallback`` and the backoff) or a ``RedisLink`` shared with the
    windows of other models (which then has its own of those, and is closed by its owner).
    """

    def __init__(
        self,
        link: str | RedisLink,
        *,
        upstream: str,
        model: str = ANY_MODEL,
        rpm: int | None = None,
        tpm: int | None = None,
        window_s: float = 60.0,
        margin_s: float | None = None,
        socket_timeout_s: float = DEFAULT_REDIS_TIMEOUT_S,
        estimator: TokenEstimator | None = None,
        on_fallback: Callable[[bool], None] | None = None,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
    ) -> None:
        super().__init__(estimator)
        # Validates rpm/tpm/window the same way, and is the budget while Redis is away.
        self.fallback = LocalRateBudget(
            rpm, tpm, window_s=window_s, margin_s=margin_s, estimator=self.estimator
        )
        self.rpm, self.tpm = rpm, tpm
        self.window_s = self.fallback.window_s
        self.margin_s = self.fallback.margin_s
        self._life_ms = math.ceil((self.window_s + self.margin_s) * 1000)
        self.upstream, self.model = upstream, model
        # One hash tag: the three keys land in one slot of a Redis Cluster too.
        tag = f"{KEY_PREFIX}{{{key_part(upstream)}|{key_part(model)}}}"
        self._keys = [f"{tag}:log", f"{tag}:tokens", f"{tag}:meta"]
        if not isinstance(link, str) and on_fallback is not None:
            raise ConfigError("on_fallback belongs to the RedisLink when one is given")
        self._owns_link = isinstance(link, str)
        self.link = (
            RedisLink(
                link,
                socket_timeout_s=socket_timeout_s,
                on_fallback=on_fallback,
                backoff_base_s=backoff_base_s,
                backoff_cap_s=backoff_cap_s,
            )
            if isinstance(link, str)
            else link
        )
        self._instance = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        #: Our permit id -> the Redis member, or the fallback's own permit.
        self._issued: dict[int, str | Permit] = {}

    # -- Redis, or the local budget -------------------------------------------------------------

    @property
    def using_redis(self) -> bool:
        return self.link.up

    @property
    def fallbacks(self) -> int:
        """Outages of this budget's Redis link so far."""
        return self.link.fallbacks

    def _call(self, script: Any, args: Sequence[str | int | float]) -> Any:
        return self.link.call(script, self._keys, args)

    def _remember(self, member: str | Permit, estimate: TokenEstimate) -> Permit:
        permit = Permit(next(self._ids), estimate, time.monotonic())
        with self._lock:
            if len(self._issued) > 4096:
                # Permits that were never adjusted; those older than a window count no more.
                self._issued = dict(list(self._issued.items())[-2048:])
            self._issued[permit.id] = member
        return permit

    # -- the primitives ---------------------------------------------------------------------------

    def try_acquire(self, estimate: TokenEstimate) -> Permit | float:
        member = f"{self._instance}:{next(self._ids)}"
        args = (self.rpm or 0, self.tpm or 0, self._life_ms, estimate.total, member)
        try:
            admitted, wait_ms = self._call(self.link.acquire, args)
        except _Down:
            local = self.fallback.try_acquire(estimate)
            return local if isinstance(local, float) else self._remember(local, estimate)
        if admitted:
            return self._remember(member, estimate)
        return max(0.001, int(wait_ms) / 1000)

    def adjust(self, permit: Permit, tokens: int) -> None:
        with self._lock:
            issued = self._issued.pop(permit.id, None)
        if isinstance(issued, Permit):
            self.fallback.adjust(issued, tokens)
        elif issued is not None:
            # Down: that start's count stays at the estimate, and leaves with the window.
            with contextlib.suppress(_Down):
                self._call(self.link.adjust, (issued, max(0, tokens)))

    def observe(self, limits: ObservedLimits, *, model: str | None = None) -> None:
        # This instance is one model's window (``model=`` above); the caller routed the answer.
        # The local budget hears everything too: if Redis goes, it knows what the upstream said.
        self.fallback.observe(limits, model=model)

        def ms(seconds: float | None) -> str:
            return "" if seconds is None else str(math.ceil(seconds * 1000))

        def count(value: int | None) -> str:
            return "" if value is None else str(value)

        args = (
            self.rpm or 0,
            self.tpm or 0,
            self._life_ms,
            count(limits.limit_requests),
            count(limits.limit_tokens),
            count(limits.remaining_requests),
            ms(limits.reset_requests_s),
            count(limits.remaining_tokens),
            ms(limits.reset_tokens_s),
        )
        with contextlib.suppress(_Down):
            self._call(self.link.observe, args)

    def cool_down(self, seconds: float, *, model: str | None = None) -> None:
        if not (math.isfinite(seconds) and seconds > 0):
            seconds = DEFAULT_RETRY_WAIT_S
        self.fallback.cool_down(seconds, model=model)
        with contextlib.suppress(_Down):
            self._call(self.link.cool_down, (math.ceil(seconds * 1000), self._life_ms))

    def snapshot(self) -> dict[str, Any]:
        try:
            now_ms, starts, flat = self._call(self.link.snapshot, ())
        except _Down:
            snapshot = self.fallback.snapshot()
            snapshot.update(store="local", redis_fallbacks=self.fallbacks)
            return snapshot
        meta = {_text(flat[i]): float(flat[i + 1]) for i in range(0, len(flat), 2)}
        learned_rpm, learned_tpm = meta.get("learned_rpm"), meta.get("learned_tpm")
        return {
            "store": "redis",
            "rpm": tighter_limit(self.rpm, None if learned_rpm is None else int(learned_rpm)),
            "tpm": tighter_limit(self.tpm, None if learned_tpm is None else int(learned_tpm)),
            "window_s": self.window_s,
            "requests_in_window": int(starts),
            "tokens_in_window": int(meta.get("used", 0)),
            "cooling_down_s": round(max(0.0, (meta.get("cool_until", 0) - now_ms) / 1000), 3),
            "admitted": int(meta.get("admitted", 0)),
            "waits": int(meta.get("waits", 0)),
            "chars_per_token": round(self.estimator.chars_per_token, 3),
            "redis_fallbacks": self.fallbacks,
        }

    def close(self) -> None:
        if self._owns_link:
            self.link.close()


_PLAIN_KEY_PART = re.compile(r"[A-Za-z0-9._~:/@+-]{1,100}")


def key_part(text: str) -> str:
    """``text`` as a part of a Redis key: as it is when short and plain, else a digest, so a
    model or URL with braces (a hash tag), ``|`` or a thousand characters keeps keys apart
    and bounded."""
    if _PLAIN_KEY_PART.fullmatch(text):
        return text
    return "sha256-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
