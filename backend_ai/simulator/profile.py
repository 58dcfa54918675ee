"""What a simulated completion looks like: timing, size and faults, plus the per-key budget.

A :class:`SimProfile` is resolved per request from three layers, later ones winning: the
server-wide defaults, the ``X-Sim`` header, the body's ``"sim"`` object. Every layer is a plain
JSON object validated by :func:`parse_sim_keys`, so a typo in a test's options is a 400 naming
the key instead of a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from backend_ai.errors import ConfigError

__all__ = [
    "DEFAULT_PROFILE",
    "FAST_PROFILE",
    "SIM_KEYS",
    "SIM_KEY_TYPES",
    "Budget",
    "SimKeyError",
    "SimProfile",
    "parse_budget",
    "parse_sim_keys",
]


class SimKeyError(ConfigError):
    """A sim option is unknown or has a bad value; ``param`` names it for the 400 body."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class _Spec(NamedTuple):
    kinds: tuple[type, ...]
    low: float | None  # None means "no bound"
    high: float | None


_NUMBER = (int, float)
_KEY_SPECS: dict[str, _Spec] = {
    "ttft_ms": _Spec(_NUMBER, 0, None),
    "itl_ms": _Spec(_NUMBER, 0, None),
    "tokens": _Spec((int,), 0, 100_000),
    "jitter": _Spec(_NUMBER, 0, 1),
    "seed": _Spec((int,), None, None),
    "tag": _Spec((str,), None, None),
    "fail_first": _Spec((int,), 0, None),
    "attempt_key": _Spec((str,), None, None),
    "retry_after": _Spec(_NUMBER, 0, None),
    "retry_after_ms": _Spec(_NUMBER, 0, None),
    "status": _Spec((int,), 400, 599),
    "drop_after": _Spec((int,), 0, None),
    "stall_after": _Spec((int,), 0, None),
    "stall_s": _Spec(_NUMBER, 0, None),
    "malformed_after": _Spec((int,), 0, None),
    "truncate_after": _Spec((int,), 0, None),
    "error_after": _Spec((int,), 0, None),
    "header_delay_ms": _Spec(_NUMBER, 0, None),
}
SIM_KEYS: frozenset[str] = frozenset(_KEY_SPECS)
SIM_KEY_TYPES: dict[str, type] = {
    key: float if kinds == _NUMBER else kinds[0] for key, (kinds, _, _) in _KEY_SPECS.items()
}
"""The Python type to parse each key as from text (command-line flags)."""


def _check_value(key: str, value: Any) -> Any:
    kinds, low, high = _KEY_SPECS[key]
    number: float = value if isinstance(value, int | float) else 0.0
    # bool is an int subclass in Python but never a sensible count or delay here.
    if isinstance(value, bool) or not isinstance(value, kinds):
        allowed = " or ".join(kind.__name__ for kind in kinds)
        raise SimKeyError(key, f"sim key {key!r} must be {allowed}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SimKeyError(key, f"sim key {key!r} must be finite, got {value!r}")
    if low is not None and number < low:
        raise SimKeyError(key, f"sim key {key!r} must be >= {low}, got {value!r}")
    if high is not None and number > high:
        raise SimKeyError(key, f"sim key {key!r} must be <= {high}, got {value!r}")
    return value


def parse_sim_keys(obj: Any, *, source: str = "sim") -> dict[str, Any]:
    """Validate one layer of sim options and return it as a dict of known keys.

    ``None`` values are accepted and mean "unset" (they clear an inherited fault such as
    ``status`` from the server defaults).
    """
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise SimKeyError(source, f"{source} must be a JSON object, got {type(obj).__name__}")
    parsed: dict[str, Any] = {}
    for key, value in obj.items():
        if key not in _KEY_SPECS:
            allowed = ", ".join(sorted(_KEY_SPECS))
            raise SimKeyError(key, f"unknown sim key {key!r} in {source}; allowed: {allowed}")
        parsed[key] = None if value is None else _check_value(key, value)
    return parsed


@dataclass(frozen=True, kw_only=True)
class SimProfile:
    """Timing, size and fault settings of one simulated completion (see docs/SIMULATOR.md)."""

    ttft_ms: float = 300.0
    itl_ms: float = 30.0
    tokens: int = 60
    jitter: float = 0.2
    seed: int | None = None
    tag: str | None = None
    fail_first: int = 0
    attempt_key: str | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    status: int | None = None
    drop_after: int | None = None
    stall_after: int | None = None
    stall_s: float | None = None
    malformed_after: int | None = None
    truncate_after: int | None = None
    error_after: int | None = None
    header_delay_ms: float = 0.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                if field.default is not None:
                    raise SimKeyError(field.name, f"sim key {field.name!r} cannot be null")
                continue
            _check_value(field.name, value)
        if self.stall_after is not None and self.stall_s is None:
            raise SimKeyError("stall_s", "sim key 'stall_after' needs 'stall_s' (seconds)")

    def with_keys(self, keys: Mapping[str, Any]) -> SimProfile:
        """Return a copy overridden by an already parsed layer; null restores the default."""
        if not keys:
            return self
        defaults: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(self)}
        changes = {key: defaults[key] if value is None else value for key, value in keys.items()}
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULT_PROFILE = SimProfile()
"""Looks like a real model from the client's side: ~300 ms to first token, ~33 tokens/s."""

FAST_PROFILE = SimProfile(ttft_ms=20, itl_ms=2, tokens=20, jitter=0)
"""What the test fixtures start with: fast, still strictly ordered and visibly streaming."""


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Per-API-key limits, the way provider rate limits hit a burst of parallel streams.

    ``rpm_per_key`` / ``tpm_per_key`` are requests and tokens per ``window_s`` (a minute, as
    providers count; shorter in tests), counted over a moving window when a request arrives —
    its prompt plus its ``max_tokens`` — and reported in the ``x-ratelimit-*`` headers.
    """

    max_concurrent_per_key: int | None = None
    rps_per_key: float | None = None
    rpm_per_key: int | None = None
    tpm_per_key: int | None = None
    window_s: float = 60.0

    def __post_init__(self) -> None:
        concurrent = self.max_concurrent_per_key
        if concurrent is not None and (
            isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1
        ):
            raise SimKeyError(
                "max_concurrent_per_key",
                f"max_concurrent_per_key must be a positive int or null, got {concurrent!r}",
            )
        rps = self.rps_per_key
        if rps is not None and (
            isinstance(rps, bool)
            or not isinstance(rps, int | float)
            or not math.isfinite(rps)
            or rps <= 0
        ):
            raise SimKeyError(
                "rps_per_key", f"rps_per_key must be a positive number or null, got {rps!r}"
            )
        for name in ("rpm_per_key", "tpm_per_key"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise SimKeyError(name, f"{name} must be a positive int or null, got {value!r}")
        window = self.window_s
        if (
            isinstance(window, bool)
            or not isinstance(window, int | float)
            or not math.isfinite(window)
            or window <= 0
        ):
            raise SimKeyError("window_s", f"window_s must be a positive number, got {window!r}")

    @property
    def enabled(self) -> bool:
        return any(
            value is not None
            for value in (
                self.max_concurrent_per_key,
                self.rps_per_key,
                self.rpm_per_key,
                self.tpm_per_key,
            )
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_budget(obj: Any) -> Budget:
    """Build a :class:`Budget` from its JSON object (``/_sim/config``'s ``"budget"``)."""
    if obj is None:
        return Budget()
    if not isinstance(obj, Mapping):
        raise SimKeyError("budget", f"budget must be a JSON object, got {type(obj).__name__}")
    allowed = {f.name for f in dataclasses.fields(Budget)}
    for key in obj:
        if key not in allowed:
            raise SimKeyError(key, f"unknown budget key {key!r}; allowed: {sorted(allowed)}")
    return Budget(**{key: value for key, value in obj.items() if value is not None})
