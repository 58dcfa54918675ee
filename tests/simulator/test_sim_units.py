"""The simulator's I/O-free parts: wire bytes, sim-key validation, text, budget."""

from __future__ import annotations

import json

import pytest

from backend_ai.errors import ConfigError
from backend_ai.simulator import profile, text, wire
from backend_ai.simulator.budget import BudgetLimiter, retry_after_headers
from backend_ai.simulator.profile import Budget, SimKeyError, SimProfile, parse_sim_keys
from backend_ai.simulator.stats import LatenessHistogram

# -- wire -------------------------------------------------------------------------------------


def _data(line: bytes) -> dict:
    assert line.startswith(b"data: ")
    assert line.endswith(b"\n\n")
    return json.loads(line[len(b"data: ") : -2])


def test_chunk_encoder_exact_content_bytes():
    encoder = wire.ChunkEncoder(
        completion_id="chatcmpl-1", created=7, model="m", include_usage=False
    )
    assert encoder.content(" hi") == (
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m",'
        b'"system_fingerprint":"fp_simulator","choices":[{"index":0,"delta":{"content":" hi"},'
        b'"logprobs":null,"finish_reason":null}]}\n\n'
    )


@pytest.mark.parametrize("token", ['"quoted"', "line\nbreak", "\u00e9\u4e2d", "back\\slash", ""])
def test_chunk_encoder_hostile_tokens_round_trip(token):
    encoder = wire.ChunkEncoder(
        completion_id="chatcmpl-1", created=7, model='we"ird', include_usage=True
    )
    line = encoder.content(token)
    assert line.count(b"\n") == 2, "a token must never break the SSE framing"
    chunk = _data(line)
    assert chunk["choices"][0]["delta"] == {"content": token}
    assert chunk["model"] == 'we"ird'
    assert chunk["usage"] is None


def test_chunk_encoder_role_finish_and_usage_chunks():
    encoder = wire.ChunkEncoder(completion_id="c", created=1, model="m", include_usage=True)
    role = _data(encoder.role())
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    finish = _data(encoder.finish("length"))
    assert finish["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert finish["usage"] is None
    usage = _data(encoder.usage(5, 7))
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}


def test_chunks_have_no_usage_key_without_include_usage():
    encoder = wire.ChunkEncoder(completion_id="c", created=1, model="m", include_usage=False)
    assert "usage" not in _data(encoder.content("x"))
    assert "usage" not in _data(encoder.finish("stop"))


def test_malformed_line_is_one_data_line_of_invalid_json():
    assert wire.MALFORMED_LINE.startswith(b"data: ")
    assert wire.MALFORMED_LINE.endswith(b"\n\n")
    assert wire.MALFORMED_LINE.count(b"\n") == 2
    with pytest.raises(ValueError, match="Expecting"):
        _data(wire.MALFORMED_LINE)


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (429, "requests"),
        (500, "server_error"),
        (503, "server_error"),
    ],
)
def test_error_body_has_openai_shape(status, error_type):
    body = json.loads(wire.error_body(status, "nope", param="p", code="c"))
    assert body == {"error": {"message": "nope", "type": error_type, "param": "p", "code": "c"}}


def test_error_event_is_a_data_line_with_an_error_object():
    event = _data(wire.error_event("boom"))
    assert event["error"]["message"] == "boom"
    assert event["error"]["type"] == "server_error"


# -- sim keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "param"),
    [
        ({"ttft": 1}, "ttft"),
        ({"ttft_ms": -1}, "ttft_ms"),
        ({"ttft_ms": "300"}, "ttft_ms"),
        ({"tokens": 2.5}, "tokens"),
        ({"tokens": True}, "tokens"),
        ({"jitter": 1.5}, "jitter"),
        ({"itl_ms": float("nan")}, "itl_ms"),
        ({"status": 200}, "status"),
        ({"fail_first": -1}, "fail_first"),
        ({"tag": 5}, "tag"),
    ],
)
def test_parse_sim_keys_names_the_bad_key(keys, param):
    with pytest.raises(SimKeyError) as info:
        parse_sim_keys(keys)
    assert info.value.param == param
    assert param in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_parse_sim_keys_rejects_non_objects():
    with pytest.raises(SimKeyError, match="JSON object"):
        parse_sim_keys([1, 2], source="sim")


def test_profile_layers_later_wins_and_null_restores_default():
    base = profile.FAST_PROFILE.with_keys({"status": 503})
    merged = base.with_keys({"tokens": 3}).with_keys({"tokens": 5, "status": None})
    assert merged.tokens == 5
    assert merged.status is None
    assert merged.ttft_ms == profile.FAST_PROFILE.ttft_ms


def test_profile_requires_stall_s_with_stall_after():
    with pytest.raises(SimKeyError) as info:
        SimProfile(stall_after=2)
    assert info.value.param == "stall_s"


def test_default_profile_looks_like_a_real_model():
    tokens = text.completion_tokens(seed=1, count=profile.DEFAULT_PROFILE.tokens)
    seconds = (profile.DEFAULT_PROFILE.ttft_ms + 60 * profile.DEFAULT_PROFILE.itl_ms) / 1000
    assert 200 <= len("".join(tokens)) <= 800
    assert 1 <= seconds <= 5


def test_budget_validation():
    with pytest.raises(SimKeyError):
        Budget(max_concurrent_per_key=0)
    with pytest.raises(SimKeyError):
        Budget(rps_per_key=-1.0)
    assert not Budget().enabled
    assert profile.parse_budget({"rps_per_key": 2}).rps_per_key == 2
    with pytest.raises(SimKeyError):
        profile.parse_budget({"rps": 2})


# -- text -------------------------------------------------------------------------------------


def test_text_is_deterministic_and_readable():
    first = text.completion_tokens(seed=42, count=60)
    assert first == text.completion_tokens(seed=42, count=60)
    assert first != text.completion_tokens(seed=43, count=60)
    joined = "".join(first)
    assert not joined.startswith(" ")
    assert all(token.startswith(" ") for token in first[1:])
    assert "." in joined


def test_capped_text_is_a_prefix_of_the_full_text():
    assert text.completion_tokens(7, 60)[:13] == text.completion_tokens(7, 13)


def test_seed_ignores_delivery_keys_but_not_content():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a"}]}
    same = {**body, "stream": True, "stream_options": {"include_usage": True}, "sim": {"x": 1}}
    other = {**body, "messages": [{"role": "user", "content": "b"}]}
    assert text.derive_seed(body) == text.derive_seed(same)
    assert text.derive_seed(body) != text.derive_seed(other)


# -- budget -----------------------------------------------------------------------------------


def test_concurrency_budget_admits_c_then_refuses_until_release():
    limiter = BudgetLimiter(Budget(max_concurrent_per_key=2))
    first = limiter.acquire("k", 1.0)
    second = limiter.acquire("k", 1.0)
    refused = limiter.acquire("k", 1.0)
    assert first.admitted
    assert second.admitted
    assert not refused.admitted
    assert 0 < refused.retry_after <= 1.0
    assert limiter.acquire("other-key", 1.0).admitted
    limiter.release("k", first.ticket)
    assert limiter.acquire("k", 1.0).admitted


def test_rate_budget_admits_a_burst_of_r_then_refuses():
    limiter = BudgetLimiter(Budget(rps_per_key=3))
    answers = [limiter.acquire("k", 0.0) for _ in range(5)]
    assert [a.admitted for a in answers] == [True, True, True, False, False]
    assert 0 < answers[3].retry_after <= 1 / 3 + 1e-9


def test_retry_after_headers_round_up_seconds():
    assert retry_after_headers(0.25) == [(b"retry-after", b"1"), (b"retry-after-ms", b"250")]


def test_lateness_histogram_reports_bucket_upper_bounds():
    histogram = LatenessHistogram()
    for late_ms in [0.1] * 98 + [4.0, 40.0]:
        histogram.add(late_ms / 1000)
    report = histogram.as_dict()
    assert report["samples"] == 100
    assert report["p50_ms"] == 0.5
    assert report["p99_ms"] == 5
    only_four = LatenessHistogram()
    only_four.add(0.004)
    assert only_four.as_dict()["p99_ms"] == pytest.approx(4.0), "capped at the exact maximum"
    assert report["max_ms"] == pytest.approx(40.0)
    assert LatenessHistogram().as_dict()["p99_ms"] == 0.0
