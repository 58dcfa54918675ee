"""Stream parsers, one per upstream answer shape, and the requests of the shapes beyond chat.

A section's worker feeds each network read of the upstream body to its parser's
``read(received, batch)`` and hands the chunks the read completed to the run with
``deliver(batch, state, channel)`` — or, when a connection's reader thread posts them itself,
counts what the run took with ``accepted(batch, now)``. ``reader_for`` picks the parser:

* ``ChatReader`` — plain chat completions, the default: each ``delta.content`` is a chunk.
* ``ResponsesReader`` — OpenAI's Responses API (``POST /responses`` with ``stream: true``):
  ``response.output_text.delta`` events become the section's ``chunk`` events,
  ``response.completed`` ends it with its usage, and ``response.failed``, ``error`` and
  ``response.incomplete`` end it with an error.
* ``ChatReasoningReader`` — chat completions from a reasoning model: ``reasoning_content``
  (or ``reasoning``) deltas become ``reasoning`` events, never part of the answer's text.

All read raw SSE lines and parse each payload with the C JSON scanner instead of the SDK's
typed event objects: CPU per chunk is how many users a core can serve, and the typed path
costs several times the raw one. The Responses reader also turns
reasoning summary deltas into ``reasoning`` events.

Answer chunks and reasoning chunks are numbered apart (``seq`` from 0 each), and only answer
chunks count in the section's ``chunks``/``chars``; ``ttft_ms`` is the time to the first
answer chunk — what a reader waits for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from backend_ai.errors import IncompleteResponseError, MalformedChunkError, UpstreamStreamError
from backend_ai.streaming.config import StreamConfig
from backend_ai.streaming.events import (
    ContentChunk,
    ReasoningChunk,
    TokenUsage,
)
from backend_ai.streaming.upstream import SSEDataParser

if TYPE_CHECKING:
    from backend_ai.streaming.channel import RunChannel
    from backend_ai.streaming.section_state import SectionState

__all__ = [
    "ChatReader",
    "ChatReasoningReader",
    "ResponsesReader",
    "SectionCancelled",
    "SectionReader",
    "add_chat_reasoning",
    "decode_payload",
    "reader_for",
    "responses_body",
]

_RESPONSES_REASONING_DELTAS = frozenset(
    {"response.reasoning_summary_text.delta", "response.reasoning_text.delta"}
)


class SectionReader(Protocol):
    """What a section's worker needs of a stream parser (every reader here is one)."""

    section: str
    seq: int
    chars: int
    finish_reason: str | None
    usage: TokenUsage | None
    ttft_ms: float | None
    started: float

    def read(self, received: bytes, batch: list[Any]) -> None: ...

    def deliver(self, batch: list[Any], state: SectionState, channel: RunChannel) -> None: ...

    def accepted(self, batch: list[Any], now: float) -> None: ...


class SectionCancelled(Exception):
    """The run refused a read's chunks: the section was cancelled meanwhile."""


_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def decode_payload(data: bytes) -> dict[str, Any]:
    """One payload's JSON object, parsed by the C scanner without ``json.loads``' detours."""
    try:
        text = data.decode()
        payload, end = _scan_json(text, 0)
    except (UnicodeDecodeError, ValueError, StopIteration):
        raise MalformedChunkError(data[:80]) from None
    if not isinstance(payload, dict) or text[end:].strip():
        raise MalformedChunkError(data[:80])
    return payload


def _int(raw: Any) -> int:
    return int(raw or 0)


class _Reader:
    """Counters and delivery shared by the parsers here; subclasses implement ``read``."""

    __slots__ = (
        "chars",
        "finish_reason",
        "parser",
        "pending_reasoning",
        "reasoning_seq",
        "section",
        "seq",
        "started",
        "ttft_ms",
        "usage",
    )

    def __init__(self, section: str, first_seq: int, started: float) -> None:
        self.section = section
        self.parser = SSEDataParser()
        self.seq = first_seq
        self.reasoning_seq = 0
        #: Reasoning chunks in the batch being read, not yet delivered.
        self.pending_reasoning = 0
        self.chars = 0
        self.finish_reason: str | None = None
        self.usage: TokenUsage | None = None
        self.started = started
        self.ttft_ms: float | None = None

    def deliver(self, batch: list[Any], state: SectionState, channel: RunChannel) -> None:
        """Hand a read's chunks to the run; raise ``SectionCancelled`` if it refused them."""
        now = time.monotonic()
        state.last_activity = now
        if not batch:
            return
        if not channel.put_chunks(batch, state):
            raise SectionCancelled
        self.accepted(batch, now)

    def accepted(self, batch: list[Any], now: float) -> None:
        """Count a batch the run took: its answer chunks, and its reasoning chunks apart."""
        reasoning, self.pending_reasoning = self.pending_reasoning, 0
        self.reasoning_seq += reasoning
        answer = len(batch) - reasoning
        if not answer:
            return
        if self.ttft_ms is None:
            self.ttft_ms = (now - self.started) * 1000
        self.seq += answer
        if reasoning:
            self.chars += sum(len(c.content) for c in batch if type(c) is ContentChunk)
        else:
            self.chars += sum(len(c.content) for c in batch)


class ResponsesReader(_Reader):
    """Parses a streamed Responses API answer (see the module docstring)."""

    __slots__ = ()

    def read(self, received: bytes, batch: list[Any]) -> None:
        """Parse one network read into ``batch``; raise when the upstream reports a failure or
        an incomplete answer (the chunks already in ``batch`` stay valid)."""
        section = self.section
        seq = self.seq + len(batch) - self.pending_reasoning
        for data in self.parser.feed(received):
            if data == b"[DONE]":  # not part of the Responses API, but harmless if sent
                continue
            payload = decode_payload(data)
            kind = payload.get("type")
            if kind == "response.output_text.delta":
                delta = payload.get("delta")
                if delta:
                    batch.append(ContentChunk(section, seq, delta))
                    seq += 1
            elif kind in _RESPONSES_REASONING_DELTAS:
                delta = payload.get("delta")
                if delta:
                    batch.append(
                        ReasoningChunk(section, self.reasoning_seq + self.pending_reasoning, delta)
                    )
                    self.pending_reasoning += 1
            elif kind == "response.completed":
                response = payload.get("response") or {}
                self.usage = _responses_usage(response.get("usage"))
                self.finish_reason = "stop"
            elif kind == "response.incomplete":
                response = payload.get("response") or {}
                details = response.get("incomplete_details") or {}
                reason = details.get("reason") if isinstance(details, dict) else None
                raise IncompleteResponseError(str(reason or "no reason given"))
            elif kind == "response.failed":
                response = payload.get("response") or {}
                error = response.get("error") if isinstance(response, dict) else None
                detail = error.get("message") if isinstance(error, dict) else error
                raise UpstreamStreamError(str(detail or "the response failed"))
            elif kind == "error":
                raise UpstreamStreamError(str(payload.get("message") or "error event"))


def _responses_usage(raw: Any) -> TokenUsage | None:
    if not isinstance(raw, dict):
        return None
    try:
        prompt, completion = _int(raw.get("input_tokens")), _int(raw.get("output_tokens"))
        return TokenUsage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=_int(raw.get("total_tokens")) or prompt + completion,
        )
    except (TypeError, ValueError):
        return None


def _chat_usage(raw: Any) -> TokenUsage | None:
    if not isinstance(raw, dict):
        return None
    try:
        return TokenUsage(
            prompt_tokens=_int(raw.get("prompt_tokens")),
            completion_tokens=_int(raw.get("completion_tokens")),
            total_tokens=_int(raw.get("total_tokens")),
        )
    except (TypeError, ValueError):
        return None


def _chat_payload(data: bytes) -> dict[str, Any]:
    """One chat-completions payload; an ``error`` object sent mid-stream raises."""
    payload = decode_payload(data)
    error = payload.get("error")
    if error:
        detail = error.get("message") if isinstance(error, dict) else error
        raise UpstreamStreamError(str(detail))
    return payload


class ChatReader(_Reader):
    """Parses plain chat completions, the default: each ``delta.content`` is one chunk."""

    __slots__ = ()

    def read(self, received: bytes, batch: list[Any]) -> None:
        """Parse one network read into ``batch``; raise on a bad or error payload (the chunks
        already in ``batch`` stay valid)."""
        section = self.section
        seq = self.seq + len(batch)
        for data in self.parser.feed(received):
            if data == b"[DONE]":
                return
            payload = _chat_payload(data)
            for choice in payload.get("choices") or ():
                delta = choice.get("delta")
                content = delta.get("content") if delta else None
                if content:
                    batch.append(ContentChunk(section, seq, content))
                    seq += 1
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
            if payload.get("usage"):
                self.usage = _chat_usage(payload["usage"])


class ChatReasoningReader(_Reader):
    """Parses chat completions whose deltas may carry reasoning (see the module docstring)."""

    __slots__ = ()

    def read(self, received: bytes, batch: list[Any]) -> None:
        """Parse one network read into ``batch``; raise on a bad or error payload."""
        section = self.section
        seq = self.seq + len(batch) - self.pending_reasoning
        for data in self.parser.feed(received):
            if data == b"[DONE]":
                return
            payload = _chat_payload(data)
            for choice in payload.get("choices") or ():
                delta = choice.get("delta")
                if delta:
                    thought = delta.get("reasoning_content") or delta.get("reasoning")
                    if thought and isinstance(thought, str):
                        batch.append(
                            ReasoningChunk(
                                section, self.reasoning_seq + self.pending_reasoning, thought
                            )
                        )
                        self.pending_reasoning += 1
                    content = delta.get("content")
                    if content:
                        batch.append(ContentChunk(section, seq, content))
                        seq += 1
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
            if payload.get("usage"):
                self.usage = _chat_usage(payload["usage"])


def reader_for(config: StreamConfig, first_seq: int, started: float) -> SectionReader:
    """The parser a section's upstream answer needs."""
    if config.api == "responses":
        return ResponsesReader(config.section_name, first_seq, started)
    if config.reasoning_effort is not None:
        return ChatReasoningReader(config.section_name, first_seq, started)
    return ChatReader(config.section_name, first_seq, started)


def responses_body(config: StreamConfig) -> dict[str, Any]:
    """The ``POST /responses`` body of a section: its messages as ``input``. Usage always
    comes with ``response.completed``: the run's ``include_usage`` needs nothing here."""
    body: dict[str, Any] = {
        "model": config.model,
        "input": config.messages(),
        "max_output_tokens": config.max_tokens,
        "stream": True,
    }
    if config.reasoning_effort is None:
        body["temperature"] = config.temperature
    else:
        body["reasoning"] = {"effort": config.reasoning_effort, "summary": "auto"}
    if config.extra_body:
        body.update(config.extra_body)
    return body


def add_chat_reasoning(body: dict[str, Any], config: StreamConfig) -> None:
    """Turn a chat-completions body into a reasoning model's: the effort, the token limit as
    ``max_completion_tokens`` (reasoning models refuse ``max_tokens``), and no temperature
    (they accept only the default)."""
    body["reasoning_effort"] = config.reasoning_effort
    body.pop("temperature", None)
    if "max_tokens" in body:
        body["max_completion_tokens"] = body.pop("max_tokens")
