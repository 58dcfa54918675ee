"""Request validation: everything a streaming route checks before it sends a single byte.

A stream that has started cannot turn into a 4xx any more, so every check happens here, up
front, and raises ``RequestError`` — which the app turns into
``{"error": {"code": ..., "message": ...}}`` with the status that fits:

* 415 ``unsupported_media_type`` — the body is not declared as JSON;
* 400 ``invalid_json`` — the body is not a JSON object (bad syntax, bad UTF-8, too deep);
* 422 for a well-formed body with wrong content (missing, empty, mistyped or unknown fields,
  text too long, bad mode, bad model list).

Messages name the field and say what is allowed. They never echo a rejected text back, so a
response cannot reflect whatever a client sent; field and model names are quoted at most,
truncated and with unprintable characters replaced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from backend_ai.errors import BackendAIError
from backend_ai.simulator.profile import DEFAULT_PROFILE, SIM_KEYS, SimKeyError, parse_sim_keys
from backend_ai.streaming.config import Mode

if TYPE_CHECKING:
    from flask import Request

__all__ = [
    "MAX_HISTORY_TURNS",
    "MODES",
    "RequestError",
    "check_fields",
    "check_json_mimetype",
    "decode_json_object",
    "history_turns",
    "json_body",
    "model_list",
    "optional_int",
    "optional_object",
    "required_text",
    "sim_controls",
    "stream_mode",
]

#: The orderings a streaming route accepts: every mode the engine has.
MODES = tuple(mode.value for mode in Mode)
#: Most earlier turns a follow-up request may carry; the route's own system prompt comes first.
MAX_HISTORY_TURNS = 20
_HISTORY_ROLES = ("user", "assistant")


class RequestError(BackendAIError):
    """A request the service refuses; ``status``/``code``/``message`` become the JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or ``RequestError`` (415 for other media types, 400 if bad)."""
    check_json_mimetype(request.mimetype)
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body is cut at the limit by Werkzeug; cut means too large, not bad JSON.
        raise RequestError(413, "payload_too_large", "the request body is too large")
    return decode_json_object(raw)


def check_json_mimetype(mimetype: str) -> None:
    """415 unless the body is declared as ``application/json``."""
    if mimetype != "application/json":
        raise RequestError(
            415, "unsupported_media_type", "the request body must be JSON (application/json)"
        )


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """A request body's JSON object, or a 400 ``RequestError`` saying why it is not one."""
    # Parsed with ``json.loads`` rather than a framework's helper: deep nesting raises
    # RecursionError, which the frameworks do not treat as bad JSON and would turn into a 500.
    try:
        body = json.loads(raw)
        # JSON may carry lone surrogates (``"\\ud800"``) that no UTF-8 upstream request can.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(
            400, "invalid_json", "the request body must be valid Unicode text"
        ) from None
    except (ValueError, RecursionError):
        raise RequestError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_json", "the request body must be a JSON object")
    return body


def check_fields(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse unknown fields: a typo (``"promt"``) should fail loudly, not be ignored."""
    allowed_set = set(allowed)
    unknown = sorted(k for k in body if k not in allowed_set)
    if unknown:
        names = ", ".join(_quote(k) for k in unknown[:5])
        raise RequestError(
            422,
            "unknown_field",
            f"unknown field(s) {names}; allowed: {', '.join(sorted(allowed_set))}",
        )


def required_text(body: Mapping[str, Any], name: str, *, max_chars: int) -> str:
    """A required, non-blank string of at most ``max_chars`` characters."""
    if name not in body:
        raise RequestError(422, "missing_field", f"field '{name}' is required")
    value = body[name]
    if not isinstance(value, str):
        raise RequestError(422, "invalid_type", f"field '{name}' must be a string")
    if not value.strip():
        raise RequestError(422, "empty_field", f"field '{name}' must not be empty")
    if len(value) > max_chars:
        raise RequestError(
            422,
            "text_too_long",
            f"field '{name}' has {len(value)} characters; the maximum is {max_chars}",
        )
    return value.strip()


def stream_mode(body: Mapping[str, Any]) -> str:
    """The requested ordering; ``interleaved`` when absent."""
    value = body.get("mode", "interleaved")
    if not isinstance(value, str) or value not in MODES:
        raise RequestError(422, "invalid_mode", f"field 'mode' must be one of: {', '.join(MODES)}")
    return value


def sim_controls(value: Any, *, field: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Simulator controls, checked as the simulator will check them (422 naming the key).

    Checked here, before the stream starts, because the simulator would refuse them only when
    each section calls it — a stream of ``bad_request`` errors where a 422 belongs.
    ``defaults`` are the controls the app sends with every request (``sim_defaults``): some
    keys are only valid together (``stall_after`` needs ``stall_s``).
    """
    try:
        keys = parse_sim_keys(value, source=field)
        DEFAULT_PROFILE.with_keys(parse_sim_keys(defaults)).with_keys(keys)
    except SimKeyError as exc:
        if exc.param not in SIM_KEYS:
            allowed = ", ".join(sorted(SIM_KEYS))
            raise RequestError(
                422,
                "invalid_sim",
                f"unknown key {_quote(exc.param)} in '{field}'; allowed: {allowed}",
            ) from None
        # The simulator's messages end with the rejected value; a response never echoes one.
        reason = str(exc).partition(", got ")[0]
        raise RequestError(422, "invalid_sim", f"in '{field}': {reason}") from None
    return keys


def optional_int(body: Mapping[str, Any], name: str, *, minimum: int, maximum: int) -> int | None:
    """An optional integer within ``[minimum, maximum]``."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise RequestError(
            422,
            "invalid_value",
            f"field '{name}' must be an integer from {minimum} to {maximum}",
        )
    return value


def optional_object(body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """An optional JSON object."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RequestError(422, "invalid_type", f"field '{name}' must be a JSON object")
    return value


def model_list(
    body: Mapping[str, Any], name: str, *, max_models: int, allowed: tuple[str, ...]
) -> list[str]:
    """1 to ``max_models`` distinct model names, each in ``allowed`` when that is not empty."""
    if name not in body:
        raise RequestError(422, "missing_field", f"field '{name}' is required")
    value = body[name]
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise RequestError(422, "invalid_type", f"field '{name}' must be a list of strings")
    models = [m.strip() for m in value]
    if not models:
        raise RequestError(422, "empty_field", f"field '{name}' needs at least one model")
    if len(models) > max_models:
        raise RequestError(
            422,
            "too_many_models",
            f"field '{name}' has {len(models)} models; the maximum is {max_models}",
        )
    if not all(models) or any(len(m) > 200 for m in models):
        raise RequestError(422, "invalid_value", f"field '{name}' must hold non-empty model names")
    duplicates = sorted({m for m in models if models.count(m) > 1})
    if duplicates:
        raise RequestError(
            422,
            "duplicate_model",
            f"field '{name}' lists {_quote(duplicates[0])} more than once",
        )
    if allowed:
        unknown = [m for m in models if m not in allowed]
        if unknown:
            raise RequestError(
                422,
                "unknown_model",
                f"model {_quote(unknown[0])} is not allowed; allowed: {', '.join(allowed)}",
            )
    return models


def history_turns(body: Mapping[str, Any], name: str, *, max_chars: int) -> list[dict[str, str]]:
    """Optional earlier turns of a conversation: ``[{"role": "user"|"assistant", "content"}]``.

    At most ``MAX_HISTORY_TURNS`` turns, each a non-blank text of at most ``max_chars``
    characters; the route's own system prompt stays the only system message.
    """
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError(422, "invalid_type", f"field '{name}' must be a list of turns")
    if len(value) > MAX_HISTORY_TURNS:
        raise RequestError(
            422,
            "too_many_turns",
            f"field '{name}' has {len(value)} turns; the maximum is {MAX_HISTORY_TURNS}",
        )
    turns: list[dict[str, str]] = []
    for index, turn in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            raise RequestError(
                422, "invalid_type", f"'{where}' must be an object with 'role' and 'content'"
            )
        role, content = turn["role"], turn["content"]
        if not isinstance(role, str) or role not in _HISTORY_ROLES:
            raise RequestError(
                422, "invalid_value", f"'{where}.role' must be one of: {', '.join(_HISTORY_ROLES)}"
            )
        if not isinstance(content, str) or not content.strip():
            raise RequestError(
                422, "invalid_value", f"'{where}.content' must be a non-empty string"
            )
        if len(content) > max_chars:
            raise RequestError(
                422,
                "text_too_long",
                f"'{where}.content' has {len(content)} characters; the maximum is {max_chars}",
            )
        turns.append({"role": role, "content": content})
    return turns


def _quote(name: str) -> str:
    """A short, printable rendering of a client-supplied name for an error message."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in name[:40])
    return f"'{clean}'" + ("..." if len(name) > 40 else "")
