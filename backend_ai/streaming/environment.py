"""The one reader of environment variables, for the engine and the service alike.

Each setting a variable can change is declared once, as a ``Variable`` next to the record it
fills (``PoolSettings`` in ``http_pool``, the executor's size in ``executor``, the preset models
in ``config``, the service's own in ``backend_ai.app.settings``); ``read`` turns a table of
them into that record. The default of a setting is the record's field default and nothing
else: a variable that is unset or blank leaves the field alone.

Why by hand and not with ``pydantic-settings``:

- The engine reads ``BACKEND_AI_HTTP_*``, ``BACKEND_AI_MAX_WORKERS`` and
  ``BACKEND_AI_MODEL_*`` itself (``get_http_client()`` works without the service) and depends
  only on ``openai``, ``httpx`` and ``h2``; ``pydantic-settings`` could only be a service
  dependency, which would leave the engine a reader of its own: two readers again.
- The variable names are fixed by existing deployments and are flat (``BACKEND_AI_DEADLINE_S``
  sets ``Settings.run.deadline_s``); ``pydantic-settings`` derives nested names from a
  delimiter (the run's deadline would be ``..._RUN__DEADLINE_S``), so every field would need
  an alias anyway.
- ``off``/``none``/``0`` meaning "no limit" for durations, and secrets that must never be
  echoed in an error, would each need a custom validator.
- Validation already lives in the frozen records' ``__post_init__`` (the same checks whether a
  value comes from the environment, Django's settings or a test); pydantic would be a second
  validator with its own messages, which name a field path, not the variable a user set.

What this module adds is small: parsing text into a typed value, and an error that names the
variable and its bad value (never the value of a secret) on top of the record's own message.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from backend_ai.errors import ConfigError

__all__ = [
    "OFF_WORDS",
    "Variable",
    "comma_list",
    "flag",
    "integer",
    "integer_or_off",
    "json_object",
    "number",
    "number_or_off",
    "path_or_off",
    "read",
    "text",
    "value",
]

_T = TypeVar("_T")

#: Words that turn off a limit that may be off (``BACKEND_AI_DEADLINE_S=off``).
OFF_WORDS = frozenset({"off", "none", "0", "false", "no"})
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


#: ``Variable.blank`` when blank text is the same as unset.
_UNSET: Any = object()


class _Unreadable(ValueError):
    """A parser's complaint: what the text must be (``"an integer"``)."""


# -- parsers: non-blank, stripped text in, a typed value out ------------------------------------


def text(raw: str) -> str:
    return raw


def integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise _Unreadable("an integer") from None


def number(raw: str) -> float:
    try:
        parsed = float(raw)
    except ValueError:
        parsed = math.nan
    if not math.isfinite(parsed):
        raise _Unreadable("a finite number")
    return parsed


def flag(raw: str) -> bool:
    word = raw.lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise _Unreadable("a boolean (1/0, true/false, yes/no, on/off)")


def _or_off(parse: Callable[[str], _T], what: str) -> Callable[[str], _T | None]:
    """``parse``, or None for an off word (a limit that may be switched off)."""

    def parse_or_off(raw: str) -> _T | None:
        if raw.lower() in OFF_WORDS:
            return None
        try:
            return parse(raw)
        except _Unreadable:
            raise _Unreadable(what) from None

    return parse_or_off


number_or_off = _or_off(number, "a number, or off")
integer_or_off = _or_off(integer, "an integer, or off")


def path_or_off(raw: str) -> str | None:
    return None if raw.lower() in OFF_WORDS else raw


def comma_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def json_object(raw: str) -> Mapping[str, Any]:
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise _Unreadable("a JSON object") from None
    if not isinstance(parsed, dict):
        raise _Unreadable("a JSON object")
    return parsed


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, the field it sets and how its text is read.

    ``secret`` keeps the value out of every error message. A variable set to blank text is
    unset (the field keeps its default) unless ``blank`` gives the value blank text means.
    """

    name: str
    field: str
    parse: Callable[[str], Any] = text
    secret: bool = False
    blank: Any = _UNSET

    def raw(self, environ: Mapping[str, str]) -> str | None:
        """The stripped text of the variable, or None when it sets nothing."""
        found = environ.get(self.name)
        if found is None:
            return None
        stripped = found.strip()
        if not stripped and self.blank is _UNSET:
            return None
        return stripped

    def parsed(self, raw: str) -> Any:
        """``raw`` as the field's value, or ``ConfigError`` naming the variable."""
        if not raw:
            return self.blank
        try:
            return self.parse(raw)
        except _Unreadable as exc:
            raise ConfigError(f"{self.name} must be {exc}{self._got(raw)}") from None

    def _got(self, raw: str) -> str:
        return "" if self.secret else f", got {raw!r}"

    def blame(self, raw: str, exc: ConfigError) -> ConfigError:
        """The record's complaint about this variable's value, naming the variable."""
        shown = self.name if self.secret else f"{self.name}={raw!r}"
        return ConfigError(f"{shown}: {exc}")


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def value(
    variable: Variable,
    default: _T,
    environ: Mapping[str, str] | None = None,
    *,
    check: Callable[[Any], None] | None = None,
) -> _T:
    """One variable's value, or ``default`` when it is unset or blank.

    ``check`` (which raises ``ConfigError``) validates a value that came from the variable; its
    complaint then names the variable.
    """
    raw = variable.raw(_environ(environ))
    if raw is None:
        return default
    parsed = variable.parsed(raw)
    if check is not None:
        try:
            check(parsed)
        except ConfigError as exc:
            raise variable.blame(raw, exc) from None
    return parsed


def read(
    cls: Callable[..., _T],
    variables: Iterable[Variable],
    environ: Mapping[str, str] | None = None,
    /,
    **base: Any,
) -> _T:
    """``cls(**base)`` with the fields of every set variable replaced by its value.

    ``cls`` validates (a frozen dataclass's ``__post_init__``); when it refuses, the error
    names the variable whose value it refused: each set value is tried alone on top of
    ``base``, and a value that passes alone but not with the others (``max_keepalive`` above
    ``max_connections``) is reported with every variable that was set.
    """
    env = _environ(environ)
    found: dict[str, tuple[Variable, str, Any]] = {}
    for variable in variables:
        raw = variable.raw(env)
        if raw is not None:
            found[variable.field] = (variable, raw, variable.parsed(raw))
    values = {field: parsed for field, (_, _, parsed) in found.items()}
    try:
        return cls(**{**base, **values})
    except ConfigError as exc:
        together = exc
    if not found:
        raise together
    start = cls(**base)
    for field, (variable, raw, parsed) in found.items():
        try:
            replace(start, **{field: parsed})  # type: ignore[type-var]
        except ConfigError as alone:
            raise variable.blame(raw, alone) from None
    names = ", ".join(variable.name for variable, _, _ in found.values())
    raise ConfigError(f"{together} (from {names})") from None
