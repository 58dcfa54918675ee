"""Events: records, each tagged with its section, with the payloads the protocol names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend_ai.streaming.config import Mode
from backend_ai.streaming.events import (
    ContentChunk,
    ErrorCode,
    Heartbeat,
    RateLimitFallback,
    RunDone,
    RunStarted,
    SectionDone,
    SectionError,
    SectionStarted,
    TokenUsage,
)

EXAMPLES = [
    RunStarted(request_id="r", sections=("a",), mode=Mode.ORDERED),
    SectionStarted(section="a", model="m"),
    ContentChunk("a", 0, "x"),
    SectionDone(section="a", finish_reason="stop", ttft_ms=1.0, duration_ms=2.0, chars=1, chunks=1),
    SectionError(section="a", code=ErrorCode.TIMEOUT, message="m"),
    RateLimitFallback(sections=("a",), wait_ms=1.0),
    RunDone(request_id="r", duration_ms=1.0, completed=(), failed=("a",)),
    Heartbeat(),
]


def test_types_are_the_protocol_names():
    assert [type(e).type for e in EXAMPLES] == [
        "start",
        "section_start",
        "chunk",
        "section_done",
        "error",
        "rate_limit",
        "done",
        "heartbeat",
    ]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_payload_starts_with_type(event):
    payload = event.payload()
    assert next(iter(payload)) == "type"
    assert payload["type"] == event.type


@pytest.mark.parametrize(
    "event", [e for e in EXAMPLES if hasattr(e, "section")], ids=lambda e: type(e).__name__
)
def test_section_events_carry_their_section(event):
    assert event.payload()["section"] == "a"


def test_chunk_payload():
    assert ContentChunk("s", 4, "text").payload() == {
        "type": "chunk",
        "section": "s",
        "seq": 4,
        "content": "text",
    }


def test_section_done_payload_nests_usage():
    done = SectionDone(
        section="s",
        finish_reason="stop",
        ttft_ms=10.0,
        duration_ms=20.0,
        chars=5,
        chunks=2,
        usage=TokenUsage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
    )
    assert done.payload() == {
        "type": "section_done",
        "section": "s",
        "finish_reason": "stop",
        "ttft_ms": 10.0,
        "duration_ms": 20.0,
        "chars": 5,
        "chunks": 2,
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


def test_section_error_defaults_to_no_chunks():
    error = SectionError(section="s", code=ErrorCode.INCOMPLETE, message="cut off")
    assert error.payload() == {
        "type": "error",
        "section": "s",
        "code": "incomplete",
        "message": "cut off",
        "chunks": 0,
    }


def test_run_done_payload():
    assert RunDone(request_id="r", duration_ms=3.0, completed=("a",), failed=("b",)).payload() == {
        "type": "done",
        "request_id": "r",
        "duration_ms": 3.0,
        "completed": ("a",),
        "failed": ("b",),
        "cancelled": False,
    }


def test_error_codes_are_the_ones_the_protocol_documents():
    """``docs/PROTOCOL.md`` lists every error code a client may see: no more, no fewer."""
    protocol = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
    after = protocol.read_text().split("Error `code`s, machine-readable:", 1)[1]
    table = after.strip().split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE))
    assert documented == {code.value for code in ErrorCode}


def test_error_codes_are_strings():
    assert ErrorCode.TIMEOUT == "timeout"
    assert isinstance(ErrorCode.TIMEOUT, str)


def test_events_are_hashable_and_compare_by_value():
    assert ContentChunk("a", 0, "x") == ContentChunk("a", 0, "x")
    assert len({ContentChunk("a", 0, "x"), ContentChunk("a", 0, "x")}) == 1
