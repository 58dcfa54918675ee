"""The events of a run against the real SDK and simulator: shape, numbers, text, usage."""

from __future__ import annotations

import pytest

from backend_ai.errors import ConfigError
from backend_ai.streaming import RunOptions
from backend_ai.streaming.config import Mode
from backend_ai.streaming.events import (
    ContentChunk,
    ErrorCode,
    RunDone,
    RunStarted,
    SectionDone,
    SectionError,
    SectionStarted,
    TokenUsage,
)

from .helpers import (
    assert_well_formed,
    chunks_of,
    collect,
    ends,
    expected_text,
    plain,
    section,
    texts,
)

NAMES = ("summary", "symbols", "advice")


def _configs(**sim):
    return [section(name, **sim) for name in NAMES]


def test_run_shape(manager):
    events = plain(collect(manager.stream(_configs(), request_id="req-42")))
    done = assert_well_formed(events, NAMES)
    start = events[0]
    assert start == RunStarted(request_id="req-42", sections=NAMES, mode=Mode.INTERLEAVED)
    assert done.request_id == "req-42"
    assert set(done.completed) == set(NAMES)
    assert done.failed == ()
    assert done.cancelled is False
    assert done.duration_ms > 0
    for name in NAMES:
        positions = [i for i, e in enumerate(events) if getattr(e, "section", None) == name]
        first, last = events[positions[0]], events[positions[-1]]
        assert first == SectionStarted(section=name, model="gpt-4o")
        assert isinstance(last, SectionDone)


def test_generated_request_ids_are_unique(manager):
    first = next(iter(manager.stream([section("a", tokens=1)])))
    second = next(iter(manager.stream([section("a", tokens=1)])))
    assert first.request_id != second.request_id
    assert len(first.request_id) >= 16


def test_section_done_numbers_and_text(manager, client):
    configs = _configs(ttft_ms=100, itl_ms=10, tokens=20)
    events = plain(collect(manager.stream(configs)))
    assert_well_formed(events, NAMES)
    got = texts(events)
    for config in configs:
        name = config.section_name
        done = ends(events)[name]
        assert isinstance(done, SectionDone)
        chunks = chunks_of(events, name)
        assert [c.seq for c in chunks] == list(range(20))
        assert got[name] == expected_text(client, config)
        assert done.finish_reason == "stop"
        assert done.chunks == 20
        assert done.chars == len(got[name])
        assert done.ttft_ms is not None
        assert 0 < done.ttft_ms < done.duration_ms
        # First token at 100 ms of a ~290 ms stream: TTFT is measured at the first token.
        assert 0.15 < done.ttft_ms / done.duration_ms < 0.7
        assert done.usage is not None
        assert done.usage.completion_tokens == 20
        assert done.usage.total_tokens == done.usage.prompt_tokens + 20


def test_usage_matches_the_non_streamed_answer(manager, client):
    config = section("summary", tokens=12)
    events = plain(collect(manager.stream([config])))
    done = ends(events)["summary"]
    completion = client.chat.completions.create(
        model=config.model,
        messages=config.messages(),  # type: ignore[arg-type]
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        extra_body={"sim": {"tokens": 12}},
    )
    assert completion.usage is not None
    assert done.usage == TokenUsage(
        prompt_tokens=completion.usage.prompt_tokens,
        completion_tokens=completion.usage.completion_tokens,
        total_tokens=completion.usage.total_tokens,
    )
    assert texts(events)["summary"] == completion.choices[0].message.content


def test_no_usage_when_not_asked_for(make_manager):
    manager = make_manager(options=RunOptions(include_usage=False))
    events = plain(collect(manager.stream([section("a")])))
    done = ends(events)["a"]
    assert isinstance(done, SectionDone)
    assert done.usage is None


def test_system_prompt_is_sent(manager):
    system = "You interpret dreams in five careful words."
    with_system = ends(plain(collect(manager.stream([section("a", system_prompt=system)]))))["a"]
    without = ends(plain(collect(manager.stream([section("a")]))))["a"]
    assert with_system.usage is not None
    assert without.usage is not None
    # One more message: its words plus the per-message overhead of the simulator's count.
    assert with_system.usage.prompt_tokens == without.usage.prompt_tokens + 4 + len(system.split())


def test_max_tokens_caps_the_section(manager, client):
    config = section("short", max_tokens=5, tokens=20)
    events = plain(collect(manager.stream([config])))
    done = ends(events)["short"]
    assert isinstance(done, SectionDone)
    assert done.finish_reason == "length"
    assert done.chunks == 5
    full = expected_text(client, section("short", tokens=20))
    assert full.startswith(texts(events)["short"])
    assert texts(events)["short"] == expected_text(client, config)


def test_model_is_passed_through(manager, simulator):
    events = plain(collect(manager.stream([section("a", model="gpt-4o-mini")])))
    assert events[1] == SectionStarted(section="a", model="gpt-4o-mini")
    assert simulator.stats()["requests"][0]["model"] == "gpt-4o-mini"


def test_done_is_last_even_when_every_section_fails(manager):
    configs = [section(name, status=500) for name in NAMES]
    events = plain(collect(manager.stream(configs)))
    done = assert_well_formed(events, NAMES)
    assert isinstance(events[-1], RunDone)
    assert done.completed == ()
    assert set(done.failed) == set(NAMES)
    for error in ends(events).values():
        assert isinstance(error, SectionError)
        assert error.code is ErrorCode.UPSTREAM_ERROR
    assert not any(isinstance(e, ContentChunk) for e in events)


def test_done_lists_completed_and_failed(manager):
    configs = [section("ok"), section("bad", status=503), section("also-ok")]
    done = assert_well_formed(plain(collect(manager.stream(configs))), ["ok", "bad", "also-ok"])
    assert set(done.completed) == {"ok", "also-ok"}
    assert done.failed == ("bad",)


@pytest.mark.parametrize(
    ("configs", "message"),
    [
        (
            lambda: [section("a"), section("b"), section("a")],
            "duplicate section name 'a' in one run",
        ),
        (list, "a run needs at least one StreamConfig"),
        (lambda: [section("a"), "not a config"], "expected StreamConfig, got str"),
    ],
)
def test_bad_runs_fail_at_the_call_before_any_event_or_request(
    configs, message, manager, simulator
):
    with pytest.raises(ConfigError) as info:
        manager.stream(configs())  # raises here: no generator, so no event, ever
    assert str(info.value) == message
    assert simulator.stats(records=False)["requests_total"] == 0


def test_bad_section_fails_before_the_run_is_even_built(simulator):
    with pytest.raises(ConfigError, match="max_tokens must be at least 1"):
        section("a", max_tokens=0)
    with pytest.raises(ConfigError, match="mode must be one of"):
        RunOptions(mode="fastest")
    assert simulator.stats(records=False)["requests_total"] == 0
