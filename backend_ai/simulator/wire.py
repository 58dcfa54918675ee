"""OpenAI's chat-completions and Responses API wire formats, as bytes.

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
    "ResponsesEncoder",
    "completion_body",
    "error_body",
    "error_event",
    "response_body",
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


def usage_object(
    prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return usage


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

    opening = role

    def content(self, token: str) -> bytes:
        return self._content_head + json.dumps(token).encode() + self._content_tail

    def reasoning(self, token: str) -> bytes:
        """A reasoning delta, as reasoning models behind chat completions send it."""
        return self._choice({"reasoning_content": token}, None)

    def finish(self, reason: str) -> bytes:
        return self._choice({}, reason)

    def usage(self, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0) -> bytes:
        usage = _dumps(usage_object(prompt_tokens, completion_tokens, reasoning_tokens)).encode()
        return self._prefix + b'[],"usage":' + usage + b"}\n\n"

    def end(
        self, reason: str, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0
    ) -> bytes:
        """Everything after the last token: the finish chunk, usage if asked, ``[DONE]``."""
        tail = self.finish(reason)
        if self._include_usage:
            tail += self.usage(prompt_tokens, completion_tokens, reasoning_tokens)
        return tail + DONE

    def error(self, message: str) -> bytes:
        return error_event(message)


class ResponsesEncoder:
    """Renders the SSE events of one streamed Responses API answer (``POST /v1/responses``).

    Each event is an ``event:`` line naming its type and a ``data:`` line with the JSON object,
    numbered by ``sequence_number``; there is no ``[DONE]``: ``response.completed``,
    ``response.incomplete`` or ``response.failed`` ends the stream.
    """

    def __init__(self, *, response_id: str, created: int, model: str) -> None:
        self._sequence = 0
        self._response: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": created,
            "status": "in_progress",
            "model": model,
            "output": [],
            "usage": None,
        }
        self._message_id = "msg_" + response_id.removeprefix("resp_")
        self._reasoning_id = "rs_" + response_id.removeprefix("resp_")
        self._message_open = False
        self._reasoning_open = False
        self._delta_head = (
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
            b'"item_id":' + _dumps(self._message_id).encode() + b',"output_index":0,'
            b'"content_index":0,"delta":'
        )
        self._delta_mid = b',"logprobs":[],"sequence_number":'
        self._reasoning_head = (
            b"event: response.reasoning_summary_text.delta\n"
            b'data: {"type":"response.reasoning_summary_text.delta","item_id":'
            + _dumps(self._reasoning_id).encode()
            + b',"output_index":0,"summary_index":0,"delta":'
        )

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return f"event: {kind}\ndata: {_dumps(payload)}\n\n".encode()

    def _snapshot(self, **changes: Any) -> dict[str, Any]:
        return {**self._response, **changes}

    def opening(self) -> bytes:
        return self._event("response.created", {"response": self._snapshot()}) + self._event(
            "response.in_progress", {"response": self._snapshot()}
        )

    def _open_message(self) -> bytes:
        self._message_open = True
        index = 1 if self._reasoning_open else 0
        if index:
            self._delta_head = self._delta_head.replace(b'"output_index":0', b'"output_index":1', 1)
        item = {"id": self._message_id, "type": "message", "role": "assistant", "content": []}
        part = {"type": "output_text", "text": "", "annotations": []}
        return self._event(
            "response.output_item.added", {"output_index": index, "item": item}
        ) + self._event(
            "response.content_part.added",
            {"item_id": self._message_id, "output_index": index, "content_index": 0, "part": part},
        )

    def content(self, token: str) -> bytes:
        opened = b"" if self._message_open else self._open_message()
        sequence = self._sequence
        self._sequence += 1
        return (
            opened
            + self._delta_head
            + json.dumps(token).encode()
            + self._delta_mid
            + str(sequence).encode()
            + b"}\n\n"
        )

    def reasoning(self, token: str) -> bytes:
        """A reasoning summary delta (reasoning models stream these before the answer)."""
        opened = b""
        if not self._reasoning_open:
            self._reasoning_open = True
            item = {"id": self._reasoning_id, "type": "reasoning", "summary": []}
            opened = self._event("response.output_item.added", {"output_index": 0, "item": item})
        sequence = self._sequence
        self._sequence += 1
        return (
            opened
            + self._reasoning_head
            + json.dumps(token).encode()
            + b',"sequence_number":'
            + str(sequence).encode()
            + b"}\n\n"
        )

    def end(
        self, reason: str, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0
    ) -> bytes:
        """``response.completed``, or ``response.incomplete`` when the output was cut at
        ``max_output_tokens``; both carry the usage."""
        usage = {
            "input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if reason == "length":
            response = self._snapshot(
                status="incomplete",
                incomplete_details={"reason": "max_output_tokens"},
                usage=usage,
            )
            return self._event("response.incomplete", {"response": response})
        response = self._snapshot(status="completed", usage=usage)
        return self._event("response.completed", {"response": response})

    def error(self, message: str) -> bytes:
        response = self._snapshot(
            status="failed", error={"code": "server_error", "message": message}
        )
        return self._event("response.failed", {"response": response})


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


def response_body(
    *,
    response_id: str,
    created: int,
    model: str,
    content: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> bytes:
    """A non-streamed Responses API ``response`` object."""
    incomplete = finish_reason == "length"
    body = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "model": model,
        "output": [
            {
                "id": "msg_" + response_id.removeprefix("resp_"),
                "type": "message",
                "role": "assistant",
                "status": "incomplete" if incomplete else "completed",
                "content": [{"type": "output_text", "text": content, "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": prompt_tokens,
            "output_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return _dumps(body).encode()
