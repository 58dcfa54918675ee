"""``POST /batch/stream``: items streamed whole as they finish, progress, and 4xx before any
byte for a bad request."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from flask.testing import FlaskClient

from backend_ai.app.gunicorn_process import GunicornProcess
from backend_ai.simulator import SimulatorProcess
from tests.support.sse import data_events, parse_frames

from .conftest import MakeApp


def post(client: FlaskClient, body: dict[str, Any]) -> Any:
    return client.post("/batch/stream", json=body)


def test_items_stream_whole_with_progress_and_done_last(sim_client: FlaskClient) -> None:
    items = ["apples", {"id": "pear", "text": "pears"}, "plums", "figs"]
    response = post(
        sim_client, {"instruction": "Name a colour for", "items": items, "mode": "as_completed"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    events = data_events(parse_frames(response.get_data(as_text=True)))
    assert events[0]["type"] == "batch_start"
    assert events[0]["total"] == 4
    assert events[-1]["type"] == "done"
    assert (events[-1]["done"], events[-1]["failed"]) == (4, 0)
    results = [e for e in events if e["type"] == "item"]
    assert sorted(r["id"] for r in results) == ["0", "2", "3", "pear"]
    for result in results:
        assert result["text"]
        assert result["error"] is None
        assert result["finish_reason"] == "stop"
    progress = [e for e in events if e["type"] == "progress"]
    assert progress
    assert progress[-1]["done"] == 4
    assert progress[-1]["tokens"] == sum(r["usage"]["total_tokens"] for r in results)


def test_ordered_mode_keeps_input_order_and_errors_stay_per_item(
    sim_client: FlaskClient,
) -> None:
    response = post(
        sim_client,
        {
            "instruction": "Summarise",
            "items": ["one", "two", "three"],
            "mode": "ordered",
            "on_error": "continue",
            "sim": {"ttft_ms": 5},
        },
    )
    events = data_events(parse_frames(response.get_data(as_text=True)))
    results = [e for e in events if e["type"] == "item"]
    assert [r["index"] for r in results] == [0, 1, 2]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"instruction": "x"}, 422, "invalid_type"),
        ({"instruction": "x", "items": []}, 422, "empty_field"),
        ({"instruction": "x", "items": ["a"] * 6}, 422, "too_many_items"),
        ({"instruction": "x", "items": ["a" * 101]}, 422, "item_too_long"),
        ({"instruction": "x", "items": [3]}, 422, "invalid_item"),
        ({"instruction": "x", "items": [" "]}, 422, "invalid_item"),
        ({"instruction": "x", "items": [{"id": "a", "text": "b"}] * 2}, 422, "duplicate_id"),
        ({"instruction": "x", "items": ["a"], "mode": "interleaved"}, 422, "invalid_value"),
        ({"instruction": "x", "items": ["a"], "on_error": "panic"}, 422, "invalid_value"),
        ({"items": ["a"]}, 422, "missing_field"),
        ({"instruction": "x", "items": ["a"], "extra": 1}, 422, "unknown_field"),
    ],
)
def test_bad_requests_are_json_errors_before_any_stream(
    make_app: MakeApp, body: dict[str, Any], status: int, code: str
) -> None:
    client = make_app(batch_max_items=5, batch_max_item_chars=100).test_client()
    response = post(client, body)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == code


def test_rpm_and_tpm_settings_give_the_service_one_budget(make_app: MakeApp) -> None:
    from backend_ai.app.extension import get_state
    from backend_ai.app.settings import BudgetSettings, Settings

    app = make_app(budget=BudgetSettings(rpm=60, tpm=90_000))
    state = get_state(app)
    assert state.budget is not None
    # The limits apply to each model's window on its own.
    for model in ("gpt-4o", "gpt-4o-mini"):
        assert state.budget.for_model(model).snapshot()["rpm"] == 60
        assert state.budget.for_model(model).snapshot()["tpm"] == 90_000
    assert get_state(make_app()).budget is None
    settings = Settings.from_env({"BACKEND_AI_RPM": "500", "BACKEND_AI_TPM": "30000"})
    assert (settings.budget.rpm, settings.budget.tpm) == (500, 30_000)


def test_a_client_that_goes_away_cancels_every_item_upstream(
    service: GunicornProcess, http: httpx.Client, simulator: SimulatorProcess
) -> None:
    """Nothing but progress events reach the socket while the items stream (each item goes out
    whole when it ends), and they are enough for the server to notice the client is gone."""
    body = {
        "instruction": "Summarise",
        "items": [f"text {n}" for n in range(6)],
        "sim": {"ttft_ms": 20, "itl_ms": 10, "tokens": 2000},  # 20 s per item
    }
    assert service.url is not None
    with http.stream("POST", service.url + "batch/stream", json=body) as response:
        assert response.status_code == 200
        for text in response.iter_text():
            if "batch_start" in text:
                break
        simulator.wait_for_stats(lambda s: s["streams_active"] == 6, timeout=10.0)
    stats = simulator.wait_for_stats(
        lambda s: s["streams_active"] == 0 and len(s["disconnects"]) == 6, timeout=10.0
    )
    assert stats["streams_completed"] == 0
