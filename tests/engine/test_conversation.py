"""A section that carries a whole conversation instead of one prompt, against the simulator.

The simulator counts the prompt tokens of exactly the messages it received, so the usage of the
section proves every turn, in order and with its role, reached the upstream.
"""

from __future__ import annotations

import pytest

from backend_ai.errors import ConfigError
from backend_ai.simulator.text import count_prompt_tokens
from backend_ai.streaming import ParallelStreamManager, StreamConfig
from backend_ai.streaming.config import (
    MAX_CONVERSATION_CHARS,
    MAX_CONVERSATION_MESSAGES,
)
from backend_ai.streaming.events import SectionDone

from .helpers import collect, ends, plain, texts

CONVERSATION = [
    {"role": "system", "content": "You read dreams."},
    {"role": "user", "content": "I dreamt of a glass city."},
    {"role": "assistant", "content": "Glass often stands for clarity and fragility alike."},
    {"role": "user", "content": "And the flying part?"},
]


def test_a_conversation_reaches_the_upstream_whole(manager: ParallelStreamManager) -> None:
    config = StreamConfig(
        "follow_up", conversation=CONVERSATION, extra_body={"sim": {"tag": "follow_up"}}
    )
    single = StreamConfig("single", "And the flying part?", extra_body={"sim": {"tag": "single"}})
    events = plain(collect(manager.stream([config, single])))
    done = ends(events)
    assert isinstance(done["follow_up"], SectionDone)
    assert isinstance(done["single"], SectionDone)
    assert texts(events)["follow_up"]
    usage, single_usage = done["follow_up"].usage, done["single"].usage
    assert usage is not None
    assert single_usage is not None
    assert usage.prompt_tokens == count_prompt_tokens(CONVERSATION)
    assert single_usage.prompt_tokens == count_prompt_tokens([CONVERSATION[-1]])
    assert config.messages() == CONVERSATION


def test_the_conversation_is_frozen_at_construction() -> None:
    turns = [dict(message) for message in CONVERSATION]
    config = StreamConfig("s", conversation=turns)
    turns[1]["content"] = "changed afterwards"
    turns.append({"role": "user", "content": "appended afterwards"})
    assert config.messages() == CONVERSATION
    hash(config)  # usable as a key, like any other config
    assert config == StreamConfig("s", conversation=CONVERSATION)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"conversation": []}, "at least one message"),
        ({"conversation": "hello"}, "list of messages"),
        ({"conversation": {"role": "user", "content": "x"}}, "list of messages"),
        ({"conversation": [{"role": "tool", "content": "x"}]}, "role must be one of"),
        ({"conversation": [{"role": "user", "content": 3}]}, "content must be a string"),
        ({"conversation": [{"role": "user"}]}, "exactly 'role' and 'content'"),
        ({"conversation": [{"role": "user", "content": "x", "name": "n"}]}, "exactly"),
        ({"conversation": [{"role": "system", "content": "only a system"}]}, "user message"),
        ({"conversation": [{"role": "user", "content": " "}]}, "user message"),
        ({"conversation": CONVERSATION, "prompt": "both"}, "not both"),
        ({"conversation": CONVERSATION, "system_prompt": "both"}, "not both"),
        (
            {"conversation": [{"role": "user", "content": "x"}] * (MAX_CONVERSATION_MESSAGES + 1)},
            "the maximum is",
        ),
        (
            {"conversation": [{"role": "user", "content": "x" * (MAX_CONVERSATION_CHARS + 1)}]},
            "the maximum is",
        ),
        ({}, "prompt must be a non-empty string"),
    ],
)
def test_bad_conversations_are_refused_with_a_message(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StreamConfig("s", **kwargs)


def test_a_prompt_section_is_unchanged() -> None:
    config = StreamConfig("s", "Interpret my dream.", system_prompt="Be kind.")
    assert config.conversation is None
    assert config.messages() == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Interpret my dream."},
    ]
