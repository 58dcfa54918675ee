"""The real ``openai`` SDK against the running simulator: wire format, text, controls."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from backend_ai.simulator import SimulatorProcess

API_KEY = "sk-simulator-test"
MESSAGES = [{"role": "user", "content": "Interpret a dream about a lighthouse."}]


def _stream_text(client: openai.OpenAI, **kwargs) -> tuple[list[str], list]:
    chunks = list(
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, **kwargs)
    )
    tokens = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    return tokens, chunks


def test_stream_has_role_chunk_tokens_and_finish_reason(client, simulator):
    tokens, chunks = _stream_text(client)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert len(tokens) == 20, "the fixture's fast profile sends 20 content tokens"
    assert all(len(c.choices[0].delta.content or "") > 0 for c in chunks[1:-1])
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.choices[0].delta.content is None
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    stats = simulator.stats()
    assert stats["streams_completed"] == 1
    assert stats["chunks_sent"] == 20
    assert stats["status_counts"] == {"200": 1}


def test_stream_and_non_stream_give_the_same_text(client):
    tokens, _ = _stream_text(client)
    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "".join(tokens)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 20


def test_same_request_same_text_different_prompt_different_text(client):
    first, _ = _stream_text(client)
    second, _ = _stream_text(client)
    other, _ = _stream_text(client, extra_body={"sim": {"seed": 12345}})
    assert first == second
    assert other != first
    assert len(" ".join(first)) > 60, "text should be readable sentences, not a placeholder"


def test_include_usage_adds_a_final_usage_chunk(client):
    _, chunks = _stream_text(client, stream_options={"include_usage": True})
    *choice_chunks, usage_chunk = chunks
    assert all(c.usage is None for c in choice_chunks)
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 20
    assert usage_chunk.usage.total_tokens == (
        usage_chunk.usage.prompt_tokens + usage_chunk.usage.completion_tokens
    )


@pytest.mark.parametrize("cap_key", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_caps_with_finish_reason_length(client, cap_key):
    full, _ = _stream_text(client)
    capped, chunks = _stream_text(client, **{cap_key: 5})
    assert capped == full[:5]
    assert chunks[-1].choices[0].finish_reason == "length"


def test_wire_bytes_end_with_done_and_carry_a_request_id(simulator):
    with httpx.Client() as http:
        response = http.post(
            f"{simulator.base_url}/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"model": "m", "messages": MESSAGES, "stream": True},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"].startswith("req_")
    events = response.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(event.startswith("data: {") for event in events[:-2])


def test_sim_keys_from_body_header_and_defaults(client, simulator):
    tokens, _ = _stream_text(client, extra_headers={"X-Sim": json.dumps({"tokens": 3})})
    assert len(tokens) == 3
    tokens, _ = _stream_text(
        client,
        extra_headers={"X-Sim": json.dumps({"tokens": 3})},
        extra_body={"sim": {"tokens": 5, "tag": "body-wins"}},
    )
    assert len(tokens) == 5, "the body's sim object wins over the header"
    simulator.configure(defaults={"tokens": 7})
    tokens, _ = _stream_text(client)
    assert len(tokens) == 7
    simulator.reset()
    tokens, _ = _stream_text(client)
    assert len(tokens) == 20, "reset restores the start-up defaults"
    tags = [record["tag"] for record in simulator.stats()["requests"]]
    assert tags == [None]


def test_tag_is_recorded(client, simulator):
    _stream_text(client, extra_body={"sim": {"tag": "section-a"}})
    (record,) = simulator.stats()["requests"]
    assert record["tag"] == "section-a"
    assert record["outcome"] == "completed"
    assert record["chunks_sent"] == 20


@pytest.mark.parametrize(
    ("sim", "param"),
    [
        ({"tokns": 5}, "tokns"),
        ({"ttft_ms": -5}, "ttft_ms"),
        ({"jitter": 2}, "jitter"),
        ({"stall_after": 1}, "stall_s"),
        ("fast", "body 'sim'"),
    ],
)
def test_bad_sim_keys_are_a_400_naming_the_key(client, simulator, sim, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_body={"sim": sim}
        )
    assert info.value.status_code == 400
    assert info.value.param == param
    assert info.value.type == "invalid_request_error"
    assert simulator.stats()["streams_started"] == 0, "never a half-started stream"


def test_bad_x_sim_header_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"X-Sim": "{not json"}
        )
    assert info.value.param == "X-Sim"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MESSAGES}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        (
            {"model": "m", "messages": MESSAGES, "stream_options": {"include_usage": True}},
            "stream_options",
        ),
    ],
)
def test_bad_request_bodies_are_openai_shaped_400s(simulator, body, param):
    with httpx.Client() as http:
        response = http.post(
            f"{simulator.base_url}/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json=body,
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param


def test_missing_api_key_is_401_and_unknown_path_404(simulator):
    with httpx.Client() as http:
        no_key = http.post(
            f"{simulator.base_url}/chat/completions", json={"model": "m", "messages": MESSAGES}
        )
        unknown = http.get(f"{simulator.base_url}/nope", headers={"Authorization": "Bearer k"})
        not_json = http.post(
            f"{simulator.base_url}/chat/completions",
            headers={"Authorization": "Bearer k"},
            content=b"{",
        )
    assert no_key.status_code == 401
    assert no_key.json()["error"]["code"] == "invalid_api_key"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "invalid_request_error"
    assert unknown.headers["x-request-id"].startswith("req_")
    assert no_key.headers["x-request-id"].startswith("req_")
    assert not_json.status_code == 400


def test_models_endpoint(client):
    models = client.models.list()
    assert "gpt-4o" in [model.id for model in models.data]
    assert client.models.retrieve("any-model-name").id == "any-model-name"


def test_control_endpoints_are_not_counted(simulator: SimulatorProcess):
    for _ in range(3):
        simulator.stats()
    stats = simulator.stats()
    assert stats["requests_total"] == 0
    assert stats["connections_accepted"] == 0


def test_configure_rejects_bad_keys(simulator: SimulatorProcess):
    with pytest.raises(Exception, match="ttft_ms"):
        simulator.configure(defaults={"ttft_ms": "slow"})
    with pytest.raises(Exception, match="max_concurrent_per_key"):
        simulator.configure(budget={"max_concurrent_per_key": 0})
