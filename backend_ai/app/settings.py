"""Every environment variable of the web service, read in one place into one frozen record.

``Settings.from_env()`` is the only code of the service that looks at ``os.environ``; everything
else receives a ``Settings``. Values are validated in ``__post_init__`` so a typo in the
environment stops the process at start-up with a message naming the variable and what it
accepts, instead of surfacing as a failed stream later.

The secrets (``openai_api_key``, ``auth_token``) are kept out of ``repr`` so a logged or printed
``Settings`` never carries them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, TypeVar

from backend_ai.errors import ConfigError
from backend_ai.streaming.executor import DEFAULT_MAX_WORKERS
from backend_ai.streaming.http_pool import PoolSettings

__all__ = [
    "ENV_PREFIX",
    "MAX_COMPARE_MODELS",
    "PRESET_NAMES",
    "SUGGESTED_COMPARE_MODELS",
    "Settings",
]

ENV_PREFIX = "BACKEND_AI_"
#: The model presets of ``optimize_stream_config``; each may name its own model.
PRESET_NAMES = ("simple", "medium", "complex")
_DEFAULT_MODELS = {"simple": "gpt-4o-mini", "medium": "gpt-4o", "complex": "gpt-4o"}
#: Suggested models for the compare page when no allow-list is configured.
SUGGESTED_COMPARE_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1-mini")
#: The compare route's limit: up to nine models side by side, as the compare page lays them out.
MAX_COMPARE_MODELS = 9

_T = TypeVar("_T")


def _frozen_map(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Configuration of one app; build it with ``from_env`` or directly (tests)."""

    # Upstream
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    #: The upstream is backend_ai's simulator (set by ``backend-ai serve`` when it embeds one);
    #: only then are simulator controls (``sim_defaults``, a request's ``"sim"``) honoured.
    upstream_is_simulator: bool = False
    #: Simulator controls sent with every upstream request as the ``X-Sim`` header.
    sim_defaults: Mapping[str, Any] = field(default_factory=lambda: _frozen_map(None))
    models: Mapping[str, str] = field(default_factory=lambda: _frozen_map(_DEFAULT_MODELS))
    #: Allowed models for ``/compare/stream``; empty means any model name is accepted.
    compare_models: tuple[str, ...] = ()

    # Engine
    #: Section threads per process (the engine's bounded pool; its default is the engine's);
    #: sections beyond it wait their turn.
    max_workers: int = DEFAULT_MAX_WORKERS
    max_parallel: int | None = None
    deadline_s: float | None = 300.0
    stall_timeout_s: float | None = 30.0
    heartbeat_s: float | None = 15.0
    queue_size: int = 256
    backpressure_timeout_s: float = 30.0
    max_retry_wait_s: float = 30.0
    max_rate_limit_retries: int = 2
    include_usage: bool = True
    #: The pooled upstream client's sizes and timeouts (``BACKEND_AI_HTTP_*``).
    http: PoolSettings = field(default_factory=PoolSettings)
    #: Proactive rate budget shared by every run of the process (None: no limit of ours).
    rpm: int | None = None
    tpm: int | None = None

    # Batches (``POST /batch/stream``)
    batch_max_items: int = 1000
    batch_max_item_chars: int = 4000
    batch_max_parallel: int = 8

    # Rate budget (``rpm`` / ``tpm`` above), shared through Redis when ``redis_url`` is set
    #: The window ``rpm`` and ``tpm`` count in (a minute, as providers count; shorter in tests).
    budget_window_s: float = 60.0
    #: How long a start counts beyond the window. The upstream counts a request when it arrives
    #: there, the budget when it admits it; between the two lie a worker thread's turn, the
    #: connection and the upstream's own queue, which grow with the load on both hosts, not
    #: with the window. A start counting this much longer keeps the two windows apart when
    #: those delays differ by up to this much between requests.
    budget_margin_s: float = 1.0
    #: The Redis every process and host shares the budget through (may carry a password).
    redis_url: str | None = field(default=None, repr=False)
    redis_timeout_s: float = 0.25

    # Requests
    max_text_chars: int = 4000
    max_content_length: int = 64 * 1024
    auth_token: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()

    # Side work
    #: SQLite file for the reading history; None disables history. ``from_env`` defaults it to
    #: a per-user state directory, so running from a clone never writes into the clone.
    history_db_path: str | None = None
    history_queue_size: int = 1000
    #: Readings older than this are pruned by the history writer; None keeps them.
    history_max_age_days: float | None = 30.0
    #: Only the newest this many readings are kept; None keeps them all.
    history_max_rows: int | None = 10_000

    # Clients
    #: A client that takes none of a response's bytes for this long is dropped (its run is
    #: cancelled and its request thread freed); None waits as long as the run's backpressure.
    send_timeout_s: float | None = 20.0
    #: One log line per request (``backend_ai.access``): route, status, timings, outcome.
    access_log: bool = True

    def __post_init__(self) -> None:
        for name in ("openai_api_key", "openai_base_url", "auth_token", "history_db_path"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name} must be a non-empty string or None")
        for name in ("openai_api_key", "auth_token"):
            value = getattr(self, name)
            if value is not None and not (value.isascii() and value.isprintable()):
                # Never echo the value: it is a secret, and it may hold a stray character.
                raise ConfigError(
                    f"{name} must be printable ASCII (it is sent in an HTTP header); "
                    "check it for a stray space, quote or line break"
                )
        if self.openai_base_url is not None and not self.openai_base_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                f"openai_base_url must start with http:// or https://, got {self.openai_base_url!r}"
            )
        if not isinstance(self.sim_defaults, Mapping):
            raise ConfigError("sim_defaults must be a JSON object")
        object.__setattr__(self, "sim_defaults", _frozen_map(self.sim_defaults))
        models = dict(self.models)
        if set(models) != set(PRESET_NAMES) or not all(
            isinstance(m, str) and m.strip() for m in models.values()
        ):
            raise ConfigError(
                f"models must name a non-empty model for each of {', '.join(PRESET_NAMES)}"
            )
        object.__setattr__(self, "models", _frozen_map(models))
        object.__setattr__(self, "compare_models", tuple(self.compare_models))
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        if len(set(self.compare_models)) != len(self.compare_models) or not all(
            isinstance(m, str) and m.strip() for m in self.compare_models
        ):
            raise ConfigError("compare_models must be distinct non-empty model names")
        _check_int("max_workers", self.max_workers, minimum=1)
        _check_int("max_parallel", self.max_parallel, minimum=1, allow_none=True)
        for name in ("deadline_s", "stall_timeout_s", "heartbeat_s"):
            _check_seconds(name, getattr(self, name), allow_none=True)
        for name in ("backpressure_timeout_s", "max_retry_wait_s"):
            _check_seconds(name, getattr(self, name))
        if not isinstance(self.http, PoolSettings):
            raise ConfigError("http must be a PoolSettings")
        _check_int("queue_size", self.queue_size, minimum=1)
        _check_int("max_rate_limit_retries", self.max_rate_limit_retries, minimum=0)
        _check_int("rpm", self.rpm, minimum=1, allow_none=True)
        _check_int("tpm", self.tpm, minimum=1, allow_none=True)
        _check_int("batch_max_items", self.batch_max_items, minimum=1)
        _check_int("batch_max_item_chars", self.batch_max_item_chars, minimum=1)
        _check_int("batch_max_parallel", self.batch_max_parallel, minimum=1)
        _check_int("max_text_chars", self.max_text_chars, minimum=1)
        _check_int("max_content_length", self.max_content_length, minimum=1024)
        _check_int("history_queue_size", self.history_queue_size, minimum=1)
        age = self.history_max_age_days
        if age is not None and (
            isinstance(age, bool)
            or not isinstance(age, int | float)
            or not math.isfinite(age)
            or age <= 0
        ):
            raise ConfigError(
                f"history_max_age_days must be a positive number of days or None, got {age!r}"
            )
        _check_int("history_max_rows", self.history_max_rows, minimum=1, allow_none=True)
        _check_seconds("send_timeout_s", self.send_timeout_s, allow_none=True)
        _check_seconds("budget_window_s", self.budget_window_s)
        _check_seconds("budget_margin_s", self.budget_margin_s, allow_zero=True)
        _check_seconds("redis_timeout_s", self.redis_timeout_s)
        if self.redis_url is not None and not (
            isinstance(self.redis_url, str)
            and self.redis_url.startswith(("redis://", "rediss://", "unix://"))
        ):
            # Never echo the value: it may hold a password.
            raise ConfigError("redis_url must start with redis://, rediss:// or unix://")

    @property
    def rate_budget_enabled(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.redis_url is not None

    @property
    def history_enabled(self) -> bool:
        return self.history_db_path is not None

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """A copy with some fields replaced; unknown names are a ``ConfigError``."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(unknown)}")
        return replace(self, **dict(overrides))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the service's configuration from environment variables (see docs/SERVICE.md)."""
        env = _Env(os.environ if environ is None else environ)
        defaults = cls()
        return cls(
            openai_api_key=env.text("OPENAI_API_KEY"),
            openai_base_url=env.text("OPENAI_BASE_URL"),
            upstream_is_simulator=env.flag("BACKEND_AI_UPSTREAM_SIMULATOR", False),
            sim_defaults=env.json_object("BACKEND_AI_SIM_DEFAULTS"),
            models={
                name: env.text(f"BACKEND_AI_MODEL_{name.upper()}") or defaults.models[name]
                for name in PRESET_NAMES
            },
            compare_models=env.csv("BACKEND_AI_COMPARE_MODELS"),
            max_workers=env.number("BACKEND_AI_MAX_WORKERS", defaults.max_workers, int),
            max_parallel=env.number("BACKEND_AI_MAX_PARALLEL", None, int),
            deadline_s=env.seconds("BACKEND_AI_DEADLINE_S", defaults.deadline_s),
            stall_timeout_s=env.seconds("BACKEND_AI_STALL_TIMEOUT_S", defaults.stall_timeout_s),
            heartbeat_s=env.seconds("BACKEND_AI_HEARTBEAT_S", defaults.heartbeat_s),
            queue_size=env.number("BACKEND_AI_QUEUE_SIZE", defaults.queue_size, int),
            backpressure_timeout_s=env.number(
                "BACKEND_AI_BACKPRESSURE_TIMEOUT_S", defaults.backpressure_timeout_s, float
            ),
            max_retry_wait_s=env.number(
                "BACKEND_AI_MAX_RETRY_WAIT_S", defaults.max_retry_wait_s, float
            ),
            max_rate_limit_retries=env.number(
                "BACKEND_AI_MAX_RATE_LIMIT_RETRIES", defaults.max_rate_limit_retries, int
            ),
            include_usage=env.flag("BACKEND_AI_INCLUDE_USAGE", defaults.include_usage),
            http=PoolSettings.from_env(env.environ),
            rpm=env.number("BACKEND_AI_RPM", None, int),
            tpm=env.number("BACKEND_AI_TPM", None, int),
            batch_max_items=env.number("BACKEND_AI_BATCH_MAX_ITEMS", defaults.batch_max_items, int),
            batch_max_item_chars=env.number(
                "BACKEND_AI_BATCH_MAX_ITEM_CHARS", defaults.batch_max_item_chars, int
            ),
            batch_max_parallel=env.number(
                "BACKEND_AI_BATCH_MAX_PARALLEL", defaults.batch_max_parallel, int
            ),
            max_text_chars=env.number("BACKEND_AI_MAX_TEXT_CHARS", defaults.max_text_chars, int),
            max_content_length=env.number(
                "BACKEND_AI_MAX_CONTENT_LENGTH", defaults.max_content_length, int
            ),
            auth_token=env.text("BACKEND_AI_AUTH_TOKEN"),
            cors_origins=env.csv("BACKEND_AI_CORS_ORIGINS"),
            history_db_path=env.optional_path("BACKEND_AI_HISTORY_DB", env.default_history_path()),
            history_queue_size=env.number(
                "BACKEND_AI_HISTORY_QUEUE_SIZE", defaults.history_queue_size, int
            ),
            history_max_age_days=env.seconds(
                "BACKEND_AI_HISTORY_MAX_AGE_DAYS", defaults.history_max_age_days
            ),
            history_max_rows=env.optional_int(
                "BACKEND_AI_HISTORY_MAX_ROWS", defaults.history_max_rows
            ),
            send_timeout_s=env.seconds("BACKEND_AI_SEND_TIMEOUT_S", defaults.send_timeout_s),
            access_log=env.flag("BACKEND_AI_ACCESS_LOG", defaults.access_log),
            budget_window_s=env.number(
                "BACKEND_AI_BUDGET_WINDOW_S", defaults.budget_window_s, float
            ),
            budget_margin_s=env.number(
                "BACKEND_AI_BUDGET_MARGIN_S", defaults.budget_margin_s, float
            ),
            redis_url=env.text("BACKEND_AI_REDIS_URL"),
            redis_timeout_s=env.number(
                "BACKEND_AI_REDIS_TIMEOUT_S", defaults.redis_timeout_s, float
            ),
        )


def _check_int(name: str, value: object, *, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or None" if allow_none else ""
        raise ConfigError(f"{name} must be an integer >= {minimum}{extra}, got {value!r}")


def _check_seconds(
    name: str, value: object, *, allow_none: bool = False, allow_zero: bool = False
) -> None:
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        kind = "non-negative" if allow_zero else "positive"
        extra = " or None" if allow_none else ""
        raise ConfigError(f"{name} must be a {kind} number of seconds{extra}, got {value!r}")


_OFF_WORDS = ("", "off", "none", "0", "false", "no")


class _Env:
    """Typed reads of environment variables; every error names the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def flag(self, name: str, default: bool) -> bool:
        raw = self._environ.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")

    def number(self, name: str, default: _T, kind: Callable[[str], _T]) -> _T:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            return kind(raw)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise ConfigError(f"{name} must be {what}, got {raw!r}") from None

    def seconds(self, name: str, default: float | None) -> float | None:
        """A positive number of seconds, or ``off``/``none``/``0`` to disable."""
        raw = self._environ.get(name)
        if raw is None or not raw.strip():
            return default
        if raw.strip().lower() in _OFF_WORDS:
            return None
        return self.number(name, default, float)

    def optional_int(self, name: str, default: int | None) -> int | None:
        """An integer, or ``off``/``none``/``0`` for no limit."""
        raw = self._environ.get(name)
        if raw is None or not raw.strip():
            return default
        if raw.strip().lower() in _OFF_WORDS:
            return None
        return self.number(name, default, int)

    def csv(self, name: str) -> tuple[str, ...]:
        raw = self._environ.get(name, "")
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    def json_object(self, name: str) -> Mapping[str, Any]:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a JSON object, got invalid JSON") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a JSON object, got {type(value).__name__}")
        return value

    def default_history_path(self) -> str:
        """``$XDG_STATE_HOME/backend_ai/history.sqlite3`` (``~/.local/state`` when unset)."""
        state_home = self.text("XDG_STATE_HOME") or os.path.join(
            self.text("HOME") or os.path.expanduser("~"), ".local", "state"
        )
        return os.path.join(state_home, "backend_ai", "history.sqlite3")

    def optional_path(self, name: str, default: str | None) -> str | None:
        raw = self._environ.get(name)
        if raw is None:
            return default
        if raw.strip().lower() in _OFF_WORDS:
            return None
        return raw.strip()
