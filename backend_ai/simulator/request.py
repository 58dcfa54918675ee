"""Turning an incoming chat-completions request into a validated :class:`ChatRequest`.

Everything that can be wrong with a request is found here, before any delay or stream starts,
so a bad request always gets a 4xx JSON error and never a half-started stream.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .asgi import Scope, get_header
from .profile import SimKeyError, SimProfile, parse_sim_keys
from .text import derive_seed

__all__ = [
    "ChatRequest",
    "RequestError",
    "bearer_key",
    "parse_chat_request",
    "parse_responses_request",
]


class RequestError(Exception):
    """A request the simulator refuses, with the OpenAI error fields to answer it with."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True)
class ChatRequest:
    """What the simulator needs from one request, already validated."""

    body: Mapping[str, Any]
    api_key: str
    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    profile: SimProfile
    seed: int
    attempt_key: str
    #: ``chat_completions`` or ``responses``: which wire format the answer takes.
    api: str = "chat_completions"

    def prompt_messages(self) -> Any:
        """The messages the prompt-token count is taken over."""
        if self.api != "responses":
            return self.body.get("messages")
        instructions = self.body.get("instructions")
        given = self.body.get("input")
        messages = [{"role": "system", "content": instructions}] if instructions else []
        if isinstance(given, str):
            return [*messages, {"role": "user", "content": given}]
        return [*messages, *(given or [])]


def bearer_key(scope: Scope) -> str:
    """The API key from ``Authorization: Bearer ...``; any non-empty key is accepted.

    Azure OpenAI's URL shape (``/openai/deployments/...``) takes the key from the ``api-key``
    header instead, as Azure does; ``Authorization: Bearer`` (an Entra ID token) works there too.
    """
    if str(scope.get("path", "")).startswith("/openai/"):
        azure_key = (get_header(scope, b"api-key") or "").strip()
        if azure_key:
            return azure_key
    value = get_header(scope, b"authorization") or ""
    scheme, _, key = value.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise RequestError(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="invalid_api_key",
        )
    return key


def _positive_int_or_none(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(
            400, f"Invalid '{name}': expected an integer >= 1, got {value!r}.", param=name
        )
    return value


def _check_messages(messages: Any, *, param: str = "messages") -> None:
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            400, f"Invalid '{param}': expected a non-empty array of messages.", param=param
        )
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise RequestError(
                400,
                f"Invalid '{param}[{index}]': expected an object with a string 'role'.",
                param=f"{param}[{index}]",
            )


def _sim_layers(body: Mapping[str, Any], header: str | None) -> tuple[dict[str, Any], ...]:
    header_obj: Any = None
    if header is not None:
        try:
            header_obj = json.loads(header)
        except ValueError as exc:
            raise RequestError(
                400, f"Invalid X-Sim header: not JSON ({exc}).", param="X-Sim"
            ) from None
    try:
        return (
            parse_sim_keys(header_obj, source="X-Sim header"),
            parse_sim_keys(body.get("sim"), source="body 'sim'"),
        )
    except SimKeyError as exc:
        raise RequestError(400, str(exc), param=exc.param) from None


def parse_chat_request(raw: bytes, scope: Scope, defaults: SimProfile) -> ChatRequest:
    """Validate a ``POST /v1/chat/completions`` request; raises :class:`RequestError`."""
    api_key = bearer_key(scope)
    body = _json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "Missing required parameter: 'model'.", param="model")
    _check_messages(body.get("messages"))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError(400, "Invalid 'stream': expected a boolean.", param="stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, Mapping):
        raise RequestError(
            400, "Invalid 'stream_options': expected an object.", param="stream_options"
        )
    if stream_options is not None and not stream:
        raise RequestError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    n = body.get("n")
    if n is not None and n != 1:
        raise RequestError(
            400, "Invalid 'n': the simulator produces exactly one choice.", param="n"
        )
    max_tokens = _positive_int_or_none(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _positive_int_or_none(body, "max_tokens")

    return _finish(
        body,
        scope,
        defaults,
        api_key=api_key,
        model=model,
        stream=bool(stream),
        include_usage=bool(stream_options and stream_options.get("include_usage")),
        max_tokens=max_tokens,
    )


def _finish(
    body: dict[str, Any],
    scope: Scope,
    defaults: SimProfile,
    *,
    api_key: str,
    model: str,
    stream: bool,
    include_usage: bool,
    max_tokens: int | None,
    api: str = "chat_completions",
) -> ChatRequest:
    """The part every API shares: the sim layers, the profile, the seed and the attempt key."""
    header = get_header(scope, b"x-sim")
    header_keys, body_keys = _sim_layers(body, header)
    try:
        profile = defaults.with_keys(header_keys).with_keys(body_keys)
    except SimKeyError as exc:
        raise RequestError(400, str(exc), param=exc.param) from None

    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    fingerprint = hashlib.sha256(f"{canonical}\0{header or ''}".encode()).hexdigest()[:32]
    return ChatRequest(
        body=body,
        api_key=api_key,
        model=model,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        profile=profile,
        seed=profile.seed if profile.seed is not None else derive_seed(body),
        attempt_key=profile.attempt_key if profile.attempt_key is not None else fingerprint,
        api=api,
    )


def parse_responses_request(raw: bytes, scope: Scope, defaults: SimProfile) -> ChatRequest:
    """Validate a ``POST /v1/responses`` request (OpenAI's Responses API); raises
    :class:`RequestError`. Usage is always reported, in ``response.completed``."""
    api_key = bearer_key(scope)
    body = _json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "Missing required parameter: 'model'.", param="model")
    given = body.get("input")
    if isinstance(given, str):
        if not given:
            raise RequestError(400, "Invalid 'input': empty string.", param="input")
    else:
        _check_messages(given, param="input")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise RequestError(400, "Invalid 'instructions': expected a string.", param="instructions")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError(400, "Invalid 'stream': expected a boolean.", param="stream")
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, Mapping):
        raise RequestError(400, "Invalid 'reasoning': expected an object.", param="reasoning")
    return _finish(
        body,
        scope,
        defaults,
        api_key=api_key,
        model=model,
        stream=bool(stream),
        include_usage=True,
        max_tokens=_positive_int_or_none(body, "max_output_tokens"),
        api="responses",
    )


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RequestError(
            400,
            "We could not parse the JSON body of your request. The body must be a JSON object.",
        )
    return body
