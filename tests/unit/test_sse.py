"""SSE encoding: exact bytes for every event, hostile text, and a real parser reading it back."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from backend_ai.streaming.sse import HEARTBEAT_FRAME, encode_comment, encode_event, format_sse
from tests.support.sse import parse_sse

HOSTILE = [
    '\n\ndata: {"type":"done"}\n\n',
    "line one\rline two",
    "crlf\r\nnext",
    "trailing newline\n",
    "\n",
    "\r",
    "",
    "é unicode ✓ 🐉 日本語",
    "separator\u2028paragraph\u2029end",
    "nel\x85 vt\x0b ff\x0c fs\x1c gs\x1d rs\x1e",
    "event: injected\nid: 9\nretry: 1",
    ": looks like a comment",
    "data: ",
    'quote " backslash \\ slash /',
    "nul \x00 byte",
    "lone surrogate-free \ud7ff",
]

ENCODE_TABLE = [
    (
        RunStarted(request_id="r1", sections=("a", "b"), mode=Mode.INTERLEAVED),
        'data: {"type":"start","request_id":"r1","sections":["a","b"],"mode":"interleaved"}\n\n',
    ),
    (
        SectionStarted(section="a", model="gpt-4o"),
        'data: {"type":"section_start","section":"a","model":"gpt-4o"}\n\n',
    ),
    (
        ContentChunk("a", 0, "Hi"),
        'data: {"type":"chunk","section":"a","seq":0,"content":"Hi"}\n\n',
    ),
    (
        ContentChunk("a", 7, "x\n\ndata: y\r"),
        'data: {"type":"chunk","section":"a","seq":7,"content":"x\\n\\ndata: y\\r"}\n\n',
    ),
    (
        ContentChunk("sé", 1, "é\u2028"),
        'data: {"type":"chunk","section":"s\\u00e9","seq":1,"content":"\\u00e9\\u2028"}\n\n',
    ),
    (
        SectionDone(
            section="a",
            finish_reason="stop",
            ttft_ms=12.5,
            duration_ms=100.0,
            chars=2,
            chunks=1,
            usage=TokenUsage(prompt_tokens=3, completion_tokens=1, total_tokens=4),
        ),
        'data: {"type":"section_done","section":"a","finish_reason":"stop","ttft_ms":12.5,'
        '"duration_ms":100.0,"chars":2,"chunks":1,'
        '"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n',
    ),
    (
        SectionDone(
            section="a", finish_reason="length", ttft_ms=None, duration_ms=1.5, chars=0, chunks=0
        ),
        'data: {"type":"section_done","section":"a","finish_reason":"length","ttft_ms":null,'
        '"duration_ms":1.5,"chars":0,"chunks":0,"usage":null}\n\n',
    ),
    (
        SectionError(section="a", code=ErrorCode.TIMEOUT, message="no data\nfor 3 s", chunks=3),
        'data: {"type":"error","section":"a","code":"timeout","message":"no data\\nfor 3 s",'
        '"chunks":3}\n\n',
    ),
    (
        RateLimitFallback(sections=("b", "c"), wait_ms=250.0),
        'data: {"type":"rate_limit","sections":["b","c"],"wait_ms":250.0}\n\n',
    ),
    (
        RunDone(request_id="r1", duration_ms=5.0, completed=("a",), failed=()),
        'data: {"type":"done","request_id":"r1","duration_ms":5.0,"completed":["a"],'
        '"failed":[],"cancelled":false}\n\n',
    ),
    (
        RunDone(request_id="r2", duration_ms=1.0, completed=(), failed=("a",), cancelled=True),
        'data: {"type":"done","request_id":"r2","duration_ms":1.0,"completed":[],'
        '"failed":["a"],"cancelled":true}\n\n',
    ),
    (Heartbeat(), ": ping\n\n"),
]


@pytest.mark.parametrize(("event", "frame"), ENCODE_TABLE, ids=lambda v: type(v).__name__)
def test_encode_event_exact_bytes(event, frame):
    assert encode_event(event) == frame


@pytest.mark.parametrize(("event", "frame"), ENCODE_TABLE[:-1], ids=lambda v: type(v).__name__)
def test_encoded_data_is_the_event_payload(event, frame):
    (parsed,) = parse_sse([encode_event(event)])
    assert parsed.event == "message"
    assert json.loads(parsed.data) == json.loads(json.dumps(event.payload()))
    assert json.loads(parsed.data)["type"] == event.type


def test_heartbeat_is_a_comment_a_client_ignores():
    assert HEARTBEAT_FRAME.startswith(":")
    events = parse_sse([encode_event(Heartbeat()), encode_event(ContentChunk("a", 0, "x"))])
    assert [(e.event, json.loads(e.data)["type"]) for e in events] == [("message", "chunk")]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_chunk_text_is_one_frame_and_reads_back_exactly(text):
    frame = encode_event(ContentChunk(text, 3, text))
    # One line plus the blank line: no line break of any kind (not even the ones
    # str.splitlines() knows) inside the frame.
    body = frame.removesuffix("\n\n")
    assert body.startswith("data: ")
    assert body.splitlines() == [body]
    assert body.isascii()
    (event,) = parse_sse([frame])
    assert json.loads(event.data) == {"type": "chunk", "section": text, "seq": 3, "content": text}


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_in_control_events(text):
    event = SectionError(section=text, code=ErrorCode.UPSTREAM_ERROR, message=text)
    frame = encode_event(event)
    assert frame.removesuffix("\n\n").splitlines() == [frame.removesuffix("\n\n")]
    (parsed,) = parse_sse([frame])
    assert json.loads(parsed.data)["message"] == text


@settings(deadline=None)  # timing varies under a loaded 2-core machine
@given(st.lists(st.text(), min_size=1, max_size=8), st.integers(min_value=1, max_value=7))
def test_any_text_survives_a_real_parser_fed_in_any_pieces(texts, piece_size):
    wire = "".join(encode_event(ContentChunk("s", i, t)) for i, t in enumerate(texts))
    pieces = [wire[i : i + piece_size] for i in range(0, len(wire), piece_size)]
    events = parse_sse(pieces)
    assert [json.loads(e.data)["content"] for e in events] == texts
    assert [json.loads(e.data)["seq"] for e in events] == list(range(len(texts)))


# -- format_sse: the general encoder ------------------------------------------------------

FORMAT_TABLE = [
    (("hello",), {}, "data: hello\n\n"),
    (("",), {}, "data: \n\n"),
    (("a\nb",), {}, "data: a\ndata: b\n\n"),
    (("a\r\nb",), {}, "data: a\ndata: b\n\n"),
    (("a\rb",), {}, "data: a\ndata: b\n\n"),
    (("a\n",), {}, "data: a\ndata: \n\n"),
    (("\n\ndata: x",), {}, "data: \ndata: \ndata: data: x\n\n"),
    (("event: x",), {}, "data: event: x\n\n"),
    (("a\u2028b",), {}, "data: a\u2028b\n\n"),
    (("x",), {"event": "update"}, "event: update\ndata: x\n\n"),
    (("x",), {"event": "up\ndate\r\n"}, "event: up date \ndata: x\n\n"),
    (("x",), {"id": "1\r2"}, "id: 1 2\ndata: x\n\n"),
    (("x",), {"retry": 1500}, "retry: 1500\ndata: x\n\n"),
    (
        ("x\ny",),
        {"event": "e", "id": "7", "retry": 5},
        "event: e\nid: 7\nretry: 5\ndata: x\ndata: y\n\n",
    ),
]


@pytest.mark.parametrize(("args", "kwargs", "frame"), FORMAT_TABLE)
def test_format_sse_exact_bytes(args, kwargs, frame):
    assert format_sse(*args, **kwargs) == frame


def _normalized(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


@pytest.mark.parametrize("text", HOSTILE)
def test_format_sse_hostile_data_reads_back(text):
    (event,) = parse_sse([format_sse(text, event="e\ninjected", id="1\n2")])
    # SSE carries line breaks as separate data lines: every break comes back as "\n".
    assert event.data == _normalized(text)
    assert event.event == "e injected"
    assert event.id == "1 2"


@settings(deadline=None)  # timing varies under a loaded 2-core machine
@given(st.text(), st.integers(min_value=1, max_value=5))
def test_format_sse_any_text_reads_back(text, piece_size):
    frame = format_sse(text)
    pieces = [frame[i : i + piece_size] for i in range(0, len(frame), piece_size)]
    (event,) = parse_sse(pieces)
    assert event.data == _normalized(text)


def test_encode_comment_comments_every_line():
    assert encode_comment("ping") == ": ping\n\n"
    assert encode_comment("a\nb\r\nc") == ": a\n: b\n: c\n\n"
    assert parse_sse([encode_comment("a\n\ndata: x"), "data: y\n\n"])[0].data == "y"
