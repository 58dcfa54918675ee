"""OpenAI's chat-completions wire format, as bytes.

Kept apart from the ASGI app so the exact bytes can be read (and tested) in one place. A stream's
constant JSON is rendered once per request; each token then costs one ``json.dumps`` of the
token, which keeps the simulator's CPU per chunk low enough for hundreds of streams.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "DONE",
    "MALFORMED_LINE",
    "ChunkEncoder",
    "completion_body",
    "error_body",
    "error_event",
    "usage_object",
]

DONE = b"data: [DONE]\n\n"
# A data line whose JSON is cut off: what a broken proxy or a buggy upstream produces.
MALFORMED_LINE = (
    b'data: {"id":"chatcmpl-malformed","object":"chat.completion.chunk","choices":[{\n\n'
)
SYSTEM_FINGERPRINT = "fp_simulator"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    429: "requests",
}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> bytes:
    """OpenAI's error JSON: ``{"error": {"message", "type", "param", "code"}}``."""
    error_type = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request")
    error = {"message": message, "type": error_type, "param": param, "code": code}
    return _dumps({"error": error}).encode()


def error_event(message: str) -> bytes:
    """An SSE ``data:`` line carrying an error object, as OpenAI sends when a stream fails."""
    error = {"message": message, "type": "server_error", "param": None, "code": None}
    return b"data: " + _dumps({"error": error}).encode() + b"\n\n"


def usage_object(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class ChunkEncoder:
    """Renders the ``chat.completion.chunk`` data lines of one stream."""

    def __init__(
        self, *, completion_id: str, created: int, model: str, include_usage: bool
    ) -> None:
        self._include_usage = include_usage
        self._prefix = (
            f'data: {{"id":{_dumps(completion_id)},"object":"chat.completion.chunk",'
            f'"created":{created},"model":{_dumps(model)},'
            f'"system_fingerprint":"{SYSTEM_FINGERPRINT}","choices":'
        ).encode()
        self._suffix = (b',"usage":null' if include_usage else b"") + b"}\n\n"
        self._content_head = self._prefix + b'[{"index":0,"delta":{"content":'
        self._content_tail = b'},"logprobs":null,"finish_reason":null}]' + self._suffix

    def _choice(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._prefix + _dumps([choice]).encode() + self._suffix

    def role(self) -> bytes:
        return self._choice({"role": "assistant", "content": "", "refusal": None}, None)

    def content(self, token: str) -> bytes:
        return self._content_head + json.dumps(token).encode() + self._content_tail

    def finish(self, reason: str) -> bytes:
        return self._choice({}, reason)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        usage = _dumps(usage_object(prompt_tokens, completion_tokens)).encode()
        return self._prefix + b'[],"usage":' + usage + b"}\n\n"


def completion_body(
    *,
    completion_id: str,
    created: int,
    model: str,
    content: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> bytes:
    """A non-streamed ``chat.completion`` object."""
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_object(prompt_tokens, completion_tokens),
    }
    return _dumps(body).encode()
