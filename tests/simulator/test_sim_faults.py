"""Each injected fault surfaces in the real ``openai`` SDK as its matching exception."""

from __future__ import annotations

import itertools
import json
import time

import httpx
import openai
import pytest

API_KEY = "sk-simulator-test"
MESSAGES = [{"role": "user", "content": "Three cards for the coming week."}]


def _consume(client: openai.OpenAI, sim: dict, **kwargs) -> tuple[list[str], Exception | None]:
    """Stream with ``sim`` options; return the content tokens seen and the error, if any."""
    tokens: list[str] = []
    try:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_body={"sim": sim}, **kwargs
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                tokens.append(chunk.choices[0].delta.content)
    except Exception as exc:
        return tokens, exc
    return tokens, None


def _raw_events(simulator, sim: dict) -> list[str]:
    with httpx.Client() as http:
        response = http.post(
            f"{simulator.base_url}/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"model": "m", "messages": MESSAGES, "stream": True, "sim": sim},
        )
    assert response.status_code == 200
    return [event for event in response.text.split("\n\n") if event]


def test_fail_first_answers_429_with_retry_headers_then_succeeds(client, simulator):
    sim = {"fail_first": 2, "retry_after": 1, "retry_after_ms": 25}
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, extra_body={"sim": sim}
            )
        assert info.value.status_code == 429
        assert info.value.code == "rate_limit_exceeded"
        assert info.value.response.headers["retry-after"] == "1"
        assert info.value.response.headers["retry-after-ms"] == "25"
    completion = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_body={"sim": sim}
    )
    assert completion.choices[0].message.content
    assert simulator.stats()["status_counts"] == {"200": 1, "429": 2}


def test_fail_first_is_absorbed_by_sdk_retries_honouring_retry_after_ms(simulator):
    with openai.OpenAI(base_url=simulator.base_url, api_key=API_KEY, max_retries=2) as client:
        tokens, error = _consume(client, {"fail_first": 2, "retry_after_ms": 10})
    assert error is None
    assert len(tokens) == 20
    stats = simulator.stats()
    assert stats["status_counts"] == {"200": 1, "429": 2}
    assert stats["streams_completed"] == 1


def test_fail_first_counts_attempts_per_attempt_key(client):
    shared = {"fail_first": 1, "attempt_key": "section-a"}
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m1", messages=MESSAGES, extra_body={"sim": shared})
    # A different body with the same attempt key is a retry of the same logical request.
    client.chat.completions.create(model="m2", messages=MESSAGES, extra_body={"sim": shared})


@pytest.mark.parametrize("status", [500, 503])
def test_status_fault_is_an_internal_server_error(client, status):
    _, error = _consume(client, {"status": status, "retry_after": 2})
    assert isinstance(error, openai.InternalServerError)
    assert error.status_code == status
    assert error.response.headers["retry-after"] == "2"
    assert error.type == "server_error"


@pytest.mark.parametrize("client_fixture", ["client", "h2_client"])
def test_drop_after_aborts_the_stream_after_n_chunks(request, simulator, client_fixture):
    client = request.getfixturevalue(client_fixture)
    tokens, error = _consume(client, {"drop_after": 3})
    assert len(tokens) == 3
    assert isinstance(error, openai.APIConnectionError)
    stats = simulator.stats()
    assert stats["streams_faulted"] == 1
    assert stats["streams_active"] == 0
    # The abort is per stream on HTTP/2 (a reset), so the same client carries on.
    tokens, error = _consume(client, {})
    assert error is None
    assert len(tokens) == 20
    if client_fixture == "h2_client":
        assert simulator.stats()["connections_accepted"] == 1


def test_drop_after_without_stream_aborts_the_response(client):
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_body={"sim": {"drop_after": 1}}
        )


def test_stall_goes_silent_then_continues(client):
    stall_s = 0.3
    arrivals: list[float] = []
    sent = time.perf_counter()
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        extra_body={"sim": {"stall_after": 4, "stall_s": stall_s}},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter())
    assert len(arrivals) == 20, "a stall delays the stream but loses nothing"
    # The server cannot send chunk 5 before the stall is over, whatever the client's delays.
    assert arrivals[4] - sent >= stall_s
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert max(range(len(gaps)), key=gaps.__getitem__) == 3, "the silence follows chunk 4"


def test_malformed_chunk_breaks_the_sdk_after_n_chunks(client):
    tokens, error = _consume(client, {"malformed_after": 2})
    assert len(tokens) == 2
    assert isinstance(error, json.JSONDecodeError)


def test_malformed_chunk_is_one_bad_line_then_the_stream_continues(simulator):
    events = _raw_events(simulator, {"malformed_after": 2})
    bad = [i for i, event in enumerate(events) if not _is_json_or_done(event)]
    assert bad == [3], "role chunk, 2 content chunks, then the malformed line"
    assert events[-1] == "data: [DONE]"
    assert len(events) == 1 + 20 + 1 + 1 + 1


def _is_json_or_done(event: str) -> bool:
    payload = event.removeprefix("data: ")
    if payload == "[DONE]":
        return True
    try:
        json.loads(payload)
    except ValueError:
        return False
    return True


def test_truncate_ends_the_body_without_finish_or_done(client, simulator):
    tokens, error = _consume(client, {"truncate_after": 4})
    assert error is None, "a truncated stream ends quietly; only the missing finish shows it"
    assert len(tokens) == 4
    events = _raw_events(simulator, {"truncate_after": 4})
    assert len(events) == 1 + 4
    assert 'finish_reason":"stop' not in events[-1]
    assert events[-1] != "data: [DONE]"


def test_error_after_sends_an_error_event(client, simulator):
    tokens, error = _consume(client, {"error_after": 5})
    assert len(tokens) == 5
    assert isinstance(error, openai.APIError)
    assert "Simulated error" in error.message
    events = _raw_events(simulator, {"error_after": 5})
    assert json.loads(events[-1].removeprefix("data: "))["error"]["type"] == "server_error"


def test_fault_beyond_the_text_happens_after_the_last_chunk(client):
    tokens, error = _consume(client, {"drop_after": 500})
    assert len(tokens) == 20
    assert isinstance(error, openai.APIConnectionError)


def test_header_delay_holds_back_the_response_headers(simulator):
    delay_s = 0.25

    def time_to_headers(sim: dict) -> float:
        with httpx.Client() as http:
            start = time.perf_counter()
            with http.stream(
                "POST",
                f"{simulator.base_url}/chat/completions",
                headers={"Authorization": f"Bearer {API_KEY}"},
                json={"model": "m", "messages": MESSAGES, "stream": True, "sim": sim},
            ) as response:
                elapsed = time.perf_counter() - start
                response.read()
        return elapsed

    baseline = time_to_headers({})
    delayed = time_to_headers({"header_delay_ms": delay_s * 1000})
    assert delayed >= delay_s, "headers can never come before the delay is over"
    assert delayed > baseline
