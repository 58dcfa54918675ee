"""Small helpers shared by the engine tests: building sections, reading runs, waiting."""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import openai

from backend_ai.streaming import StreamConfig
from backend_ai.streaming import worker as worker_module
from backend_ai.streaming.events import (
    ContentChunk,
    Event,
    Heartbeat,
    RunDone,
    SectionDone,
    SectionError,
)
from tests.support.protocol import check_stream

API_KEY = "sk-test-engine-4b1d9e0c7a52"


def section(name: str, prompt: str | None = None, **sim: Any) -> StreamConfig:
    """A section tagged with its name in the simulator's records; ``sim``: per-request controls."""
    model = sim.pop("model", "gpt-4o")
    max_tokens = sim.pop("max_tokens", 500)
    system_prompt = sim.pop("system_prompt", None)
    return StreamConfig(
        name,
        prompt or f"Write the {name} part of the reading.",
        model=model,
        max_tokens=max_tokens,
        system_prompt=system_prompt,
        extra_body={"sim": {"tag": name, **sim}},
    )


@dataclass
class Timed:
    t: float
    event: Event


def collect(events: Iterable[Event]) -> list[Timed]:
    """Every event of a run with the monotonic time it reached the consumer."""
    return [Timed(time.monotonic(), event) for event in events]


def plain(timed: list[Timed]) -> list[Event]:
    return [item.event for item in timed]


def texts(events: Iterable[Event]) -> dict[str, str]:
    """Concatenated content per section."""
    parts: dict[str, list[str]] = defaultdict(list)
    for event in events:
        if isinstance(event, ContentChunk):
            parts[event.section].append(event.content)
    return {name: "".join(chunks) for name, chunks in parts.items()}


def chunks_of(events: Iterable[Event], name: str) -> list[ContentChunk]:
    return [e for e in events if isinstance(e, ContentChunk) and e.section == name]


def ends(events: Iterable[Event]) -> dict[str, SectionDone | SectionError]:
    """The end event of each section (asserting there is only one)."""
    result: dict[str, SectionDone | SectionError] = {}
    for event in events:
        if isinstance(event, SectionDone | SectionError):
            assert event.section not in result, f"{event.section} ended twice"
            result[event.section] = event
    return result


def assert_well_formed(events: list[Event], names: Iterable[str]) -> RunDone:
    """The run keeps the stream protocol (``tests.support.protocol``) over exactly ``names``."""
    names = list(names)
    assert events[0].type == "start"
    assert events[0].sections == tuple(names)
    check_stream([e.payload() for e in events if not isinstance(e, Heartbeat)])
    done = events[-1]
    assert isinstance(done, RunDone), f"last event is {events[-1]!r}"
    return done


def expected_text(client: openai.OpenAI, config: StreamConfig) -> str:
    """The simulator's deterministic text for the same request, asked for without streaming."""
    sim = dict((config.extra_body or {}).get("sim", {}))
    # Only the content-shaping controls: faults and timing do not change the text.
    keep = {k: sim[k] for k in ("tokens", "seed") if k in sim}
    completion = client.with_options(max_retries=0).chat.completions.create(
        model=config.model,
        messages=config.messages(),  # type: ignore[arg-type]
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        extra_body={"sim": {**keep, "ttft_ms": 0, "itl_ms": 0}},
    )
    return completion.choices[0].message.content or ""


def records_by_tag(stats: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    by_tag: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in stats["requests"]:
        by_tag[record["tag"]].append(record)
    return by_tag


def threads_in_run_section() -> list[str]:
    """Names of the threads currently inside ``worker.run_section``."""
    code = worker_module.run_section.__code__
    frames = sys._current_frames()
    names = {t.ident: t.name for t in threading.enumerate()}
    busy = []
    for ident, frame in frames.items():
        current = frame
        while current is not None:
            if current.f_code is code:
                busy.append(names.get(ident, str(ident)))
                break
            current = current.f_back
    return busy


def iter_until(events: Iterator[Event], predicate: Callable[[Event], bool]) -> list[Event]:
    """Consume events up to and including the first that matches ``predicate``."""
    seen = []
    for event in events:
        seen.append(event)
        if predicate(event):
            return seen
    raise AssertionError(f"run ended before the condition was met: {seen[-3:]}")
