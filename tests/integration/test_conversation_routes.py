"""Follow-up questions: ``history`` on the compare and dream routes, through the Flask service.

The simulator counts the prompt tokens of exactly the messages it received, so a section's
usage proves the route sent its system prompt, every earlier turn, then the new question.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from backend_ai.app.prompts import COMPARE_SECTION, DREAM_SECTIONS
from backend_ai.app.validation import MAX_HISTORY_TURNS
from backend_ai.simulator.text import count_prompt_tokens
from tests.support.protocol import check_protocol
from tests.support.sse import data_events, parse_frames

from .test_validation import assert_json_error

HISTORY = [
    {"role": "user", "content": "What does a glass city mean?"},
    {"role": "assistant", "content": "Often clarity, sometimes fragility."},
]


def _run(client: FlaskClient, route: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post(route, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    frames = parse_frames(response.get_data(as_text=True))
    check_protocol(frames)
    return data_events(frames)


def _usage(events: list[dict[str, Any]]) -> dict[str, int]:
    return {
        e["section"]: e["usage"]["prompt_tokens"] for e in events if e["type"] == "section_done"
    }


def test_compare_sends_the_history_before_the_new_prompt(sim_client: FlaskClient) -> None:
    prompt = "And the flying?"
    events = _run(
        sim_client,
        "/compare/stream",
        {"prompt": prompt, "models": ["gpt-4o", "gpt-4o-mini"], "history": HISTORY},
    )
    sent = [
        {"role": "system", "content": COMPARE_SECTION.system},
        *HISTORY,
        {"role": "user", "content": prompt},
    ]
    assert _usage(events) == {m: count_prompt_tokens(sent) for m in ("gpt-4o", "gpt-4o-mini")}
    without = _run(sim_client, "/compare/stream", {"prompt": prompt, "models": ["gpt-4o"]})
    assert _usage(without)["gpt-4o"] == count_prompt_tokens([sent[0], sent[-1]])


def test_dream_follow_up_sends_the_history_to_every_section(sim_client: FlaskClient) -> None:
    dream = "I was flying over a city made of glass."
    events = _run(sim_client, "/dream/interpret-stream", {"dream": dream, "history": HISTORY})
    expected = {
        p.section: count_prompt_tokens(
            [
                {"role": "system", "content": p.system},
                *HISTORY,
                {"role": "user", "content": p.render(dream=dream)},
            ]
        )
        for p in DREAM_SECTIONS
    }
    assert _usage(events) == expected


TURN = {"role": "user", "content": "x"}


@pytest.mark.parametrize(
    ("route", "body", "code"),
    [
        ("/compare/stream", {"history": "hi"}, "invalid_type"),
        ("/compare/stream", {"history": [TURN] * (MAX_HISTORY_TURNS + 1)}, "too_many_turns"),
        ("/compare/stream", {"history": [["user", "x"]]}, "invalid_type"),
        ("/compare/stream", {"history": [{"role": "user"}]}, "invalid_type"),
        ("/compare/stream", {"history": [{**TURN, "name": "n"}]}, "invalid_type"),
        ("/compare/stream", {"history": [{"role": "system", "content": "x"}]}, "invalid_value"),
        ("/compare/stream", {"history": [{"role": "tool", "content": "x"}]}, "invalid_value"),
        ("/compare/stream", {"history": [{"role": "user", "content": ""}]}, "invalid_value"),
        ("/compare/stream", {"history": [{"role": "user", "content": 5}]}, "invalid_value"),
        (
            "/compare/stream",
            {"history": [{"role": "user", "content": "x" * 4001}]},
            "text_too_long",
        ),
        ("/dream/interpret-stream", {"history": {"role": "user"}}, "invalid_type"),
        ("/iching/reading-stream", {"history": [TURN]}, "unknown_field"),
        ("/tarot/three-card-stream", {"history": [TURN]}, "unknown_field"),
    ],
)
def test_bad_history_is_a_json_422_before_anything_streams(
    client: FlaskClient, route: str, body: dict[str, Any], code: str
) -> None:
    base = {
        "/compare/stream": {"prompt": "p", "models": ["gpt-4o"]},
        "/dream/interpret-stream": {"dream": "d"},
        "/iching/reading-stream": {"question": "q"},
        "/tarot/three-card-stream": {"question": "q"},
    }[route]
    response = client.post(route, json={**base, **body})
    assert_json_error(response, 422, code)
    assert "x" * 50 not in response.get_data(as_text=True)  # the text is never echoed
