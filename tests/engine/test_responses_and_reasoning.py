"""Sections on OpenAI's Responses API and on reasoning models, against the simulator.

With the same ``seed`` the simulator produces the same tokens whatever the API, so a
Responses-API section must deliver exactly the text a chat-completions section does, and a
reasoning section exactly the answer of a plain one — with its reasoning beside it, apart.
"""

from __future__ import annotations

from typing import Any

import pytest

from backend_ai.simulator import SimulatorProcess
from backend_ai.simulator.text import count_prompt_tokens
from backend_ai.streaming import ParallelStreamManager, StreamConfig
from backend_ai.streaming.events import (
    ContentChunk,
    ErrorCode,
    ReasoningChunk,
    SectionDone,
    SectionError,
)
from backend_ai.streaming.sse import encode_event

from .helpers import collect, ends, plain, texts

PROMPT = "Interpret a dream of a glass city."


def config(name: str, *, api: str = "chat_completions", **sim: Any) -> StreamConfig:
    effort = sim.pop("reasoning_effort", None)
    max_tokens = sim.pop("max_tokens", 500)
    return StreamConfig(
        name,
        PROMPT,
        api=api,
        reasoning_effort=effort,
        max_tokens=max_tokens,
        extra_body={"sim": {"tag": name, "seed": 7, **sim}},
    )


def reasoning_of(events: list[Any], name: str) -> list[ReasoningChunk]:
    return [e for e in events if isinstance(e, ReasoningChunk) and e.section == name]


def test_a_responses_section_streams_the_same_text_as_chat_completions(
    manager: ParallelStreamManager, simulator: SimulatorProcess
) -> None:
    events = plain(collect(manager.stream([config("chat"), config("resp", api="responses")])))
    done = ends(events)
    assert isinstance(done["chat"], SectionDone)
    assert isinstance(done["resp"], SectionDone)
    assert texts(events)["resp"] == texts(events)["chat"] != ""
    assert done["resp"].finish_reason == "stop"
    assert done["resp"].chunks == done["chat"].chunks == 20
    assert done["resp"].usage == done["chat"].usage
    assert done["resp"].usage is not None
    assert done["resp"].usage.prompt_tokens == count_prompt_tokens(
        [{"role": "user", "content": PROMPT}]
    )
    paths = {r["tag"]: r["path"] for r in simulator.stats()["requests"]}
    assert paths == {"chat": "/v1/chat/completions", "resp": "/v1/responses"}


@pytest.mark.parametrize(
    ("sim", "code", "chunks"),
    [
        ({"error_after": 5}, ErrorCode.UPSTREAM_ERROR, 5),  # response.failed
        ({"truncate_after": 5}, ErrorCode.INCOMPLETE, 5),  # clean end, no response.completed
        ({"max_tokens": 5}, ErrorCode.INCOMPLETE, 5),  # response.incomplete
        ({"drop_after": 5}, ErrorCode.CONNECTION_ERROR, 5),
        ({"malformed_after": 5}, ErrorCode.MALFORMED, 5),
        ({"status": 500}, ErrorCode.UPSTREAM_ERROR, 0),
        ({"status": 401}, ErrorCode.AUTH_ERROR, 0),
    ],
)
def test_responses_faults_end_only_their_section(
    manager: ParallelStreamManager, sim: dict[str, Any], code: ErrorCode, chunks: int
) -> None:
    events = plain(collect(manager.stream([config("bad", api="responses", **sim), config("good")])))
    done = ends(events)
    assert isinstance(done["good"], SectionDone)
    bad = done["bad"]
    assert isinstance(bad, SectionError), bad
    assert bad.code == code
    assert bad.chunks == chunks
    if "max_tokens" in sim:
        assert "max_output_tokens" in bad.message


def test_responses_rate_limit_falls_back_like_chat(manager: ParallelStreamManager) -> None:
    first = config("first", api="responses", fail_first=1, retry_after_ms=50, attempt_key="r1")
    events = plain(collect(manager.stream([first, config("second", api="responses")])))
    assert all(isinstance(e, SectionDone) for e in ends(events).values())
    assert any(e.type == "rate_limit" for e in events)


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_reasoning_arrives_apart_from_the_answer(manager: ParallelStreamManager, api: str) -> None:
    thinking = config("thinking", api=api, reasoning_tokens=6, reasoning_effort="low")
    events = plain(collect(manager.stream([thinking, config("plain", api=api)])))
    done = ends(events)
    assert isinstance(done["thinking"], SectionDone)
    reasoning = reasoning_of(events, "thinking")
    assert [r.seq for r in reasoning] == list(range(6))
    assert all(r.content for r in reasoning)
    # The answer is exactly the plain section's: no reasoning mixed in.
    assert texts(events)["thinking"] == texts(events)["plain"]
    assert done["thinking"].chunks == 20
    assert done["thinking"].chars == len(texts(events)["thinking"])
    # Reasoning comes first, as a reasoning model streams it.
    order = [type(e) for e in events if getattr(e, "section", None) == "thinking"]
    assert order.index(ContentChunk) > max(i for i, t in enumerate(order) if t is ReasoningChunk)
    frame = encode_event(reasoning[0])
    assert frame.startswith('data: {"type":"reasoning","section":"thinking","seq":0,"content":')


def test_without_reasoning_effort_reasoning_deltas_are_dropped_not_mixed_in(
    manager: ParallelStreamManager,
) -> None:
    """A server that streams ``reasoning_content`` unasked: the default parser keeps only the
    answer (ask with ``reasoning_effort`` to receive the reasoning as events)."""
    events = plain(collect(manager.stream([config("s", reasoning_tokens=4), config("plain")])))
    assert not reasoning_of(events, "s")
    assert texts(events)["s"] == texts(events)["plain"]


def test_a_reasoning_section_keeps_its_token_limit(manager: ParallelStreamManager) -> None:
    """The limit travels as ``max_completion_tokens`` (reasoning models refuse ``max_tokens``);
    the simulator honours either, so a section limited to 5 tokens ends with ``length``."""
    limited = config("limited", reasoning_effort="high", max_tokens=5)
    done = ends(plain(collect(manager.stream([limited]))))["limited"]
    assert isinstance(done, SectionDone)
    assert done.finish_reason == "length"
    assert done.chunks == 5


def test_closing_a_responses_run_closes_its_upstream_streams(
    manager: ParallelStreamManager, simulator: SimulatorProcess
) -> None:
    slow = {"ttft_ms": 10, "itl_ms": 10, "tokens": 2000}
    events = manager.stream([config(f"r{i}", api="responses", **slow) for i in range(3)])
    seen: set[str] = set()
    for event in events:
        if isinstance(event, ContentChunk):
            seen.add(event.section)
            if len(seen) == 3:
                break
    events.close()
    stats = simulator.wait_for_stats(
        lambda s: len(s["disconnects"]) >= 3 and s["streams_active"] == 0, timeout=10.0
    )
    assert stats["streams_completed"] == 0
