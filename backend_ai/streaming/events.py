"""The events of a run, each a small frozen record tagged with its section.

A run always looks like::

    start, (section_start, chunk*, section_done | error)*, [rate_limit], done

``start`` is first and ``done`` is last, always — even when every section failed or the run
was cancelled. Per section, chunks carry a sequence number from 0 so a client can prove that
every chunk arrived exactly once and in order.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, ClassVar

__all__ = [
    "ContentChunk",
    "ErrorCode",
    "Event",
    "Heartbeat",
    "RateLimitFallback",
    "ReasoningChunk",
    "RunDone",
    "RunStarted",
    "SectionDone",
    "SectionError",
    "SectionStarted",
    "TokenUsage",
]


class ErrorCode(StrEnum):
    """Machine-readable reasons a section ended without success."""

    RATE_LIMITED = "rate_limited"  # 429 and the retry budget is spent
    TIMEOUT = "timeout"  # stall, run deadline, connect or read timeout
    UPSTREAM_ERROR = "upstream_error"  # 5xx, or an error payload in the middle of the stream
    BAD_REQUEST = "bad_request"  # the upstream refused the request (4xx other than 401/403/429)
    AUTH_ERROR = "auth_error"  # 401/403: the key is missing, wrong or not allowed
    CONNECTION_ERROR = "connection_error"  # refused, reset or dropped connection
    MALFORMED = "malformed"  # a chunk the upstream sent is not valid JSON
    INCOMPLETE = "incomplete"  # the stream ended cleanly but without a finish_reason
    CANCELLED = "cancelled"  # the consumer went away or closed the run
    SLOW_CONSUMER = "slow_consumer"  # the consumer stopped reading and the buffer stayed full
    INTERNAL = "internal"  # a bug of ours; details are logged, never sent


class Event:
    """Base of every event; ``type`` is the value of the SSE ``data`` object's ``type`` field."""

    __slots__ = ()
    type: ClassVar[str]

    def payload(self) -> dict[str, Any]:
        """The JSON object sent as this event's SSE ``data``.

        Built field by field rather than with ``dataclasses.asdict``, which deep-copies every
        value through a recursive walk: the only nested record is ``TokenUsage``, and every
        other value is immutable already. (It was ~20 µs of each control event.)
        """
        out: dict[str, Any] = {"type": self.type}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if type(value) is TokenUsage:
                value = {
                    "prompt_tokens": value.prompt_tokens,
                    "completion_tokens": value.completion_tokens,
                    "total_tokens": value.total_tokens,
                }
            out[name] = value
        return out


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    type: ClassVar[str] = "start"
    request_id: str
    sections: tuple[str, ...]
    mode: str


@dataclass(frozen=True, slots=True)
class SectionStarted(Event):
    type: ClassVar[str] = "section_start"
    section: str
    model: str


@dataclass(frozen=True, slots=True)
class ContentChunk(Event):
    type: ClassVar[str] = "chunk"
    section: str
    seq: int
    content: str


@dataclass(frozen=True, slots=True)
class ReasoningChunk(Event):
    """A piece of a reasoning model's reasoning (or its summary), never part of the answer.

    Numbered by its own ``seq`` from 0 per section, apart from the answer's chunks, so a page
    can show or hide the reasoning and still check that every piece arrived once, in order.
    """

    type: ClassVar[str] = "reasoning"
    section: str
    seq: int
    content: str


@dataclass(frozen=True, slots=True)
class SectionDone(Event):
    type: ClassVar[str] = "section_done"
    section: str
    finish_reason: str
    ttft_ms: float | None
    duration_ms: float
    chars: int
    chunks: int
    usage: TokenUsage | None = None


@dataclass(frozen=True, slots=True)
class SectionError(Event):
    type: ClassVar[str] = "error"
    section: str
    code: ErrorCode
    message: str
    #: Chunks of this section delivered before the error (they stay valid).
    chunks: int = 0


@dataclass(frozen=True, slots=True)
class RateLimitFallback(Event):
    """The upstream said 429: the listed sections now run one at a time after ``wait_ms``."""

    type: ClassVar[str] = "rate_limit"
    sections: tuple[str, ...]
    wait_ms: float


@dataclass(frozen=True, slots=True)
class RunDone(Event):
    type: ClassVar[str] = "done"
    request_id: str
    duration_ms: float
    completed: tuple[str, ...]
    failed: tuple[str, ...]
    #: True when the run was cut short because the server is shutting down.
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat(Event):
    """Keeps idle connections open and lets a WSGI server notice a gone client; an SSE comment."""

    type: ClassVar[str] = "heartbeat"
