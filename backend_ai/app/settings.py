"""The web service's configuration: one frozen record of nested, validated groups.

``Settings`` holds what the service adds (upstream, requests, history, clients, batches) and
nests one record per concern rather than repeating their fields: ``Settings.run`` is the
engine's ``RunOptions`` (every run starts from it; each request picks its ``mode``),
``Settings.http`` the engine's ``PoolSettings``, ``Settings.budget`` the rate budget's
``BudgetSettings``. Each setting therefore has one definition and one default, the record's.

``Settings.from_env()`` reads every variable through the engine's one reader
(``backend_ai.streaming.environment``), from tables kept next to the records they fill:
``SERVICE_VARIABLES``, ``RUN_VARIABLES`` and ``BUDGET_VARIABLES`` here; ``POOL_VARIABLES``,
``MAX_WORKERS_VARIABLE`` and ``PRESET_MODEL_VARIABLES`` in the engine, which reads them itself
when used without the service. ``VARIABLES`` lists them all with the setting each fills; a test
holds the documentation to it. A bad value stops the process at start-up with a message naming
the variable and what it accepts, instead of surfacing as a failed stream later.

The secrets (``openai_api_key``, ``auth_token``, ``budget.redis_url``) are kept out of ``repr``
and out of every error message, so a logged or printed ``Settings`` never carries them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from backend_ai.errors import ConfigError
from backend_ai.streaming import environment
from backend_ai.streaming.config import PRESET_MODEL_VARIABLES, PRESETS, Mode, RunOptions
from backend_ai.streaming.environment import Variable
from backend_ai.streaming.executor import DEFAULT_MAX_WORKERS, MAX_WORKERS_VARIABLE
from backend_ai.streaming.http_pool import POOL_VARIABLES, PoolSettings

__all__ = [
    "BUDGET_VARIABLES",
    "ENV_PREFIX",
    "MAX_COMPARE_MODELS",
    "PRESET_NAMES",
    "RUN_VARIABLES",
    "SERVICE_VARIABLES",
    "SUGGESTED_COMPARE_MODELS",
    "VARIABLES",
    "BudgetSettings",
    "Settings",
]

ENV_PREFIX = "BACKEND_AI_"
#: The model presets of ``optimize_stream_config``; each may name its own model.
PRESET_NAMES = tuple(PRESETS)
#: Suggested models for the compare page when no allow-list is configured.
SUGGESTED_COMPARE_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1-mini")
#: The compare route's limit: up to nine models side by side, as the compare page lays them out.
MAX_COMPARE_MODELS = 9


def _frozen_map(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True, kw_only=True)
class BudgetSettings:
    """The rate budget: limits per model, and the Redis that shares them across processes.

    With neither limits nor Redis there is no budget (the engine's 429 fallback alone).
    """

    #: Requests / tokens per minute for each model (None: no limit of ours).
    rpm: int | None = None
    tpm: int | None = None
    #: The window ``rpm`` and ``tpm`` count in (a minute, as providers count; shorter in tests).
    window_s: float = 60.0
    #: How long a start counts beyond the window. The upstream counts a request when it arrives
    #: there, the budget when it admits it; between the two lie a worker thread's turn, the
    #: connection and the upstream's own queue, which grow with the load on both hosts, not
    #: with the window. A start counting this much longer keeps the two windows apart when
    #: those delays differ by up to this much between requests.
    margin_s: float = 1.0
    #: The Redis every process and host shares the budget through (may carry a password).
    redis_url: str | None = field(default=None, repr=False)
    redis_timeout_s: float = 0.25

    def __post_init__(self) -> None:
        _check_int("rpm", self.rpm, minimum=1, allow_none=True)
        _check_int("tpm", self.tpm, minimum=1, allow_none=True)
        _check_seconds("window_s", self.window_s)
        _check_seconds("margin_s", self.margin_s, allow_zero=True)
        _check_seconds("redis_timeout_s", self.redis_timeout_s)
        if self.redis_url is not None and not (
            isinstance(self.redis_url, str)
            and self.redis_url.startswith(("redis://", "rediss://", "unix://"))
        ):
            # Never echo the value: it may hold a password.
            raise ConfigError("redis_url must start with redis://, rediss:// or unix://")

    @property
    def enabled(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.redis_url is not None


#: The nested groups: the setting's name and the record it holds.
_GROUPS: Mapping[str, type[RunOptions] | type[PoolSettings] | type[BudgetSettings]] = {
    "run": RunOptions,
    "http": PoolSettings,
    "budget": BudgetSettings,
}


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
    #: The model of each preset of ``optimize_stream_config`` (by default the preset's own).
    models: Mapping[str, str] = field(
        default_factory=lambda: _frozen_map({name: p.model for name, p in PRESETS.items()})
    )
    #: Allowed models for ``/compare/stream``; empty means any model name is accepted.
    compare_models: tuple[str, ...] = ()

    # Engine
    #: What every run starts from (deadlines, heartbeats, buffering, 429 handling); each
    #: request picks its own ``mode``, so ``run.mode`` stays at its default.
    run: RunOptions = field(default_factory=RunOptions)
    #: The pooled upstream client's sizes and timeouts.
    http: PoolSettings = field(default_factory=PoolSettings)
    #: Section threads per process (the engine's bounded pool); sections beyond it wait their
    #: turn.
    max_workers: int = DEFAULT_MAX_WORKERS
    #: The proactive requests/tokens-per-minute budget shared by every run of the process.
    budget: BudgetSettings = field(default_factory=BudgetSettings)

    # Batches (``POST /batch/stream``)
    batch_max_items: int = 1000
    batch_max_item_chars: int = 4000
    batch_max_parallel: int = 8

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
        for name, kind in _GROUPS.items():
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(
                    f"{name} must be a {kind.__name__} (or, in overrides, a mapping of its fields)"
                )
        if self.run.mode is not Mode.INTERLEAVED:
            raise ConfigError(
                "run.mode is chosen by each request (its 'mode' field); leave it at its default"
            )
        _check_int("max_workers", self.max_workers, minimum=1)
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

    @property
    def history_enabled(self) -> bool:
        return self.history_db_path is not None

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """A copy with some fields replaced; unknown names are a ``ConfigError``.

        A nested group (``run``, ``http``, ``budget``) may be given as a mapping of some of its
        fields, which replace those fields only: ``{"run": {"heartbeat_s": 5}}``.
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(map(_where_it_lives, unknown))}")
        changes = dict(overrides)
        for name in _GROUPS:
            given = changes.get(name)
            if isinstance(given, Mapping):
                changes[name] = _group_with(name, getattr(self, name), given)
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the service's configuration from environment variables (see docs/SERVICE.md)."""
        env = os.environ if environ is None else environ
        return environment.read(
            cls,
            SERVICE_VARIABLES,
            env,
            run=environment.read(RunOptions, RUN_VARIABLES, env),
            http=PoolSettings.from_env(env),
            budget=environment.read(BudgetSettings, BUDGET_VARIABLES, env),
            models={
                name: environment.value(variable, PRESETS[name].model, env)
                for name, variable in PRESET_MODEL_VARIABLES.items()
            },
            history_db_path=_default_history_path(env),
        )


def _where_it_lives(name: str) -> str:
    """``name``, and where such a setting lives when a group has it (``heartbeat_s`` is
    ``run.heartbeat_s``, ``budget_window_s`` is ``budget.window_s``)."""
    for group, kind in _GROUPS.items():
        for candidate in (name, name.removeprefix(f"{group}_")):
            if candidate in {f.name for f in fields(kind)}:
                return f"{name} (it is {group}.{candidate})"
    return name


def _group_with(name: str, current: Any, given: Mapping[str, Any]) -> Any:
    """``current`` with the fields ``given`` names replaced; unknown names are refused."""
    known = {f.name for f in fields(current)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"unknown {name} settings: {', '.join(unknown)}")
    return replace(current, **given)


def _default_history_path(environ: Mapping[str, str]) -> str:
    """``$XDG_STATE_HOME/backend_ai/history.sqlite3`` (``~/.local/state`` when unset)."""
    state_home = environ.get("XDG_STATE_HOME", "").strip() or os.path.join(
        environ.get("HOME", "").strip() or os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(state_home, "backend_ai", "history.sqlite3")


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


#: The variables of ``Settings.run``: the limits every run of the service starts from.
RUN_VARIABLES = (
    Variable("BACKEND_AI_MAX_PARALLEL", "max_parallel", environment.integer),
    Variable("BACKEND_AI_DEADLINE_S", "deadline_s", environment.number_or_off),
    Variable("BACKEND_AI_STALL_TIMEOUT_S", "stall_timeout_s", environment.number_or_off),
    Variable("BACKEND_AI_HEARTBEAT_S", "heartbeat_s", environment.number_or_off),
    Variable("BACKEND_AI_QUEUE_SIZE", "queue_size", environment.integer),
    Variable("BACKEND_AI_BACKPRESSURE_TIMEOUT_S", "backpressure_timeout_s", environment.number),
    Variable("BACKEND_AI_MAX_RETRY_WAIT_S", "max_retry_wait_s", environment.number),
    Variable("BACKEND_AI_MAX_RATE_LIMIT_RETRIES", "max_rate_limit_retries", environment.integer),
    Variable("BACKEND_AI_INCLUDE_USAGE", "include_usage", environment.flag),
    Variable("BACKEND_AI_FLUSH_INTERVAL_S", "flush_interval_s", environment.number),
)

#: The variables of ``Settings``' own fields (``BACKEND_AI_MAX_WORKERS`` is the engine's).
SERVICE_VARIABLES = (
    Variable("OPENAI_API_KEY", "openai_api_key", secret=True),
    Variable("OPENAI_BASE_URL", "openai_base_url"),
    Variable("BACKEND_AI_UPSTREAM_SIMULATOR", "upstream_is_simulator", environment.flag),
    Variable("BACKEND_AI_SIM_DEFAULTS", "sim_defaults", environment.json_object),
    Variable("BACKEND_AI_COMPARE_MODELS", "compare_models", environment.comma_list),
    MAX_WORKERS_VARIABLE,
    Variable("BACKEND_AI_BATCH_MAX_ITEMS", "batch_max_items", environment.integer),
    Variable("BACKEND_AI_BATCH_MAX_ITEM_CHARS", "batch_max_item_chars", environment.integer),
    Variable("BACKEND_AI_BATCH_MAX_PARALLEL", "batch_max_parallel", environment.integer),
    Variable("BACKEND_AI_MAX_TEXT_CHARS", "max_text_chars", environment.integer),
    Variable("BACKEND_AI_MAX_CONTENT_LENGTH", "max_content_length", environment.integer),
    Variable("BACKEND_AI_AUTH_TOKEN", "auth_token", secret=True),
    Variable("BACKEND_AI_CORS_ORIGINS", "cors_origins", environment.comma_list),
    # Blank, like off, keeps no history.
    Variable("BACKEND_AI_HISTORY_DB", "history_db_path", environment.path_or_off, blank=None),
    Variable("BACKEND_AI_HISTORY_QUEUE_SIZE", "history_queue_size", environment.integer),
    Variable("BACKEND_AI_HISTORY_MAX_AGE_DAYS", "history_max_age_days", environment.number_or_off),
    Variable("BACKEND_AI_HISTORY_MAX_ROWS", "history_max_rows", environment.integer_or_off),
    Variable("BACKEND_AI_SEND_TIMEOUT_S", "send_timeout_s", environment.number_or_off),
    Variable("BACKEND_AI_ACCESS_LOG", "access_log", environment.flag),
)

#: The variables of ``Settings.budget``.
BUDGET_VARIABLES = (
    Variable("BACKEND_AI_RPM", "rpm", environment.integer),
    Variable("BACKEND_AI_TPM", "tpm", environment.integer),
    Variable("BACKEND_AI_BUDGET_WINDOW_S", "window_s", environment.number),
    Variable("BACKEND_AI_BUDGET_MARGIN_S", "margin_s", environment.number),
    Variable("BACKEND_AI_REDIS_URL", "redis_url", secret=True),
    Variable("BACKEND_AI_REDIS_TIMEOUT_S", "redis_timeout_s", environment.number),
)

#: Every variable ``Settings.from_env`` reads, with the setting it fills (``run.deadline_s``,
#: ``models.simple``); the documentation lists exactly these.
VARIABLES: tuple[tuple[str, Variable], ...] = (
    *((v.field, v) for v in SERVICE_VARIABLES),
    *((f"run.{v.field}", v) for v in RUN_VARIABLES),
    *((f"http.{v.field}", v) for v in POOL_VARIABLES),
    *((f"budget.{v.field}", v) for v in BUDGET_VARIABLES),
    *((f"models.{v.field}", v) for v in PRESET_MODEL_VARIABLES.values()),
)
