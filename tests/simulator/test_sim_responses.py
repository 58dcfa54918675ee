"""The simulator's Responses API, reasoning output and Azure OpenAI URL shape, read by the real
``openai`` SDK's typed objects: the wire format must be what the SDK itself accepts."""

from __future__ import annotations

import httpx
import openai
import pytest

from backend_ai.simulator import SimulatorProcess

API_KEY = "sk-simulator-test"
MESSAGES = [{"role": "user", "content": "Interpret a dream about a lighthouse."}]

FAST = {"ttft_ms": 5, "itl_ms": 1, "tokens": 12, "jitter": 0, "seed": 3}


def test_streamed_response_parses_with_the_sdk_and_matches_chat(client: openai.OpenAI) -> None:
    stream = client.responses.create(
        model="gpt-4o", input=MESSAGES, stream=True, extra_body={"sim": FAST}
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None
    assert completed.response.usage.output_tokens == 12
    chat = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_body={"sim": FAST}
    )
    assert text == "".join(c.choices[0].delta.content or "" for c in chat if c.choices)


def test_response_incomplete_and_failed(client: openai.OpenAI) -> None:
    cut = list(
        client.responses.create(
            model="gpt-4o", input="hi", stream=True, max_output_tokens=4, extra_body={"sim": FAST}
        )
    )
    assert cut[-1].type == "response.incomplete"
    assert cut[-1].response.incomplete_details is not None
    assert cut[-1].response.incomplete_details.reason == "max_output_tokens"
    failed = list(
        client.responses.create(
            model="gpt-4o",
            input="hi",
            stream=True,
            extra_body={"sim": {**FAST, "error_after": 2}},
        )
    )
    assert failed[-1].type == "response.failed"
    assert failed[-1].response.error is not None


def test_non_streamed_response(client: openai.OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="hi", extra_body={"sim": FAST})
    assert response.status == "completed"
    assert response.output_text
    assert response.usage is not None
    assert response.usage.output_tokens == 12


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": ""}, "input"),
        ({"model": "m", "input": [{"content": "x"}]}, "input[0]"),
        ({"model": "m", "input": "hi", "reasoning": "high"}, "reasoning"),
        ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "hi", "sim": {"reasoning_tokens": -1}}, "reasoning_tokens"),
    ],
)
def test_bad_responses_requests_are_400(
    simulator: SimulatorProcess, body: dict, param: str
) -> None:
    response = httpx.post(
        simulator.base_url + "/responses",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_chat_reasoning_content_comes_before_the_answer(client: openai.OpenAI) -> None:
    sim = {**FAST, "reasoning_tokens": 5}
    chunks = list(
        client.chat.completions.create(
            model="o4-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"sim": sim},
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = [d.model_extra.get("reasoning_content") for d in deltas if d.model_extra]
    reasoning = [r for r in reasoning if r]
    assert len(reasoning) == 5
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 12 + 5
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 5


def test_responses_reasoning_summary_events(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model="o4-mini",
            input="hi",
            stream=True,
            reasoning={"effort": "low", "summary": "auto"},
            extra_body={"sim": {**FAST, "reasoning_tokens": 4}},
        )
    )
    kinds = [e.type for e in events]
    assert kinds.count("response.reasoning_summary_text.delta") == 4
    first_answer = kinds.index("response.output_text.delta")
    assert first_answer > max(
        i for i, k in enumerate(kinds) if k == "response.reasoning_summary_text.delta"
    )


def test_azure_deployment_url_and_api_key_header(simulator: SimulatorProcess) -> None:
    with openai.AzureOpenAI(
        api_key=API_KEY,
        azure_endpoint=simulator.origin,
        api_version="2024-10-21",
        max_retries=0,
    ) as azure:
        stream = azure.chat.completions.create(
            model="my-gpt-4o-deployment", messages=MESSAGES, stream=True, extra_body={"sim": FAST}
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    record = simulator.stats()["requests"][-1]
    assert record["path"] == "/openai/deployments/my-gpt-4o-deployment/chat/completions"


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/openai/deployments/d/chat/completions", {"api-key": API_KEY}, 404),  # no api-version
        ("/openai/deployments/d/chat/completions?api-version=1", {}, 401),  # no key
        ("/openai/deployments//chat/completions?api-version=1", {"api-key": API_KEY}, 404),
    ],
)
def test_azure_shape_is_checked(
    simulator: SimulatorProcess, path: str, headers: dict, status: int
) -> None:
    body = {"model": "m", "messages": MESSAGES}
    response = httpx.post(simulator.origin + path, json=body, headers=headers)
    assert response.status_code == status
