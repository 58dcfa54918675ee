"""Connections as the simulator sees them: HTTP/2 multiplexing, TLS + ALPN, disconnects, budget."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from backend_ai.simulator import SimulatorProcess

API_KEY = "sk-simulator-test"
MESSAGES = [{"role": "user", "content": "Compare nine models on one prompt."}]


def test_nine_concurrent_streams_share_one_http2_connection(h2_client, simulator):
    barrier = threading.Barrier(9, timeout=30)

    def run(index: int) -> str:
        try:
            stream = h2_client.chat.completions.create(
                model=f"model-{index}",
                messages=MESSAGES,
                stream=True,
                # headers come at once, content after ttft: all 9 are open before any finishes
                extra_body={"sim": {"ttft_ms": 2000, "tag": f"m{index}"}},
            )
        except BaseException:
            barrier.abort()  # the others stop waiting at once; this error is the one to see
            raise
        barrier.wait()
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with ThreadPoolExecutor(max_workers=9) as pool:
        futures = [pool.submit(run, index) for index in range(9)]
        failures = [f.exception() for f in futures if f.exception() is not None]
    # Every thread's failure, the first cause included, not only the barrier it broke.
    assert not failures, failures
    texts = [f.result() for f in futures]
    assert all(texts)
    stats = simulator.stats()
    assert stats["connections_accepted"] == 1
    (connection,) = stats["connections"]
    assert connection["http_version"] == "2"
    assert connection["requests"] == 9
    assert connection["max_active"] == 9
    assert stats["streams_completed"] == 9
    assert sorted(r["tag"] for r in stats["requests"]) == [f"m{i}" for i in range(9)]


def test_cleartext_port_speaks_http1_and_http2_prior_knowledge(simulator):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(http1=False, http2=True) as h2, httpx.Client() as h1:
        assert h2.get(f"{simulator.base_url}/models", headers=headers).http_version == "HTTP/2"
        assert h1.get(f"{simulator.base_url}/models", headers=headers).http_version == "HTTP/1.1"


def test_tls_alpn_negotiates_http2(simulator_tls: SimulatorProcess):
    assert simulator_tls.base_url.startswith("https://127.0.0.1:")
    assert simulator_tls.ca_cert_path is not None
    with httpx.Client(http2=True, verify=simulator_tls.ssl_context()) as http_client:
        response = http_client.get(
            f"{simulator_tls.base_url}/models", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert response.http_version == "HTTP/2"
        with openai.OpenAI(
            base_url=simulator_tls.base_url,
            api_key=API_KEY,
            max_retries=0,
            http_client=http_client,  # type: ignore[arg-type]
        ) as client:
            stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    stats = simulator_tls.stats()
    assert [c["http_version"] for c in stats["connections"]] == ["2"]
    assert stats["streams_completed"] == 1


def test_tls_http1_client_and_untrusted_client(simulator_tls: SimulatorProcess):
    with httpx.Client(verify=simulator_tls.ssl_context()) as h1:
        response = h1.get(f"{simulator_tls.base_url}/models", headers={"Authorization": "Bearer k"})
        assert response.http_version == "HTTP/1.1"
    with httpx.Client() as untrusting, pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
        untrusting.get(f"{simulator_tls.base_url}/models")


def _open_stream_and_close(client: openai.OpenAI, sim: dict, read_chunks: int) -> float:
    """Read ``read_chunks`` content chunks, then close the stream; return the close time."""
    stream = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_body={"sim": sim}
    )
    seen = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen += 1
            if seen == read_chunks:
                break
    closed_at = time.time()
    stream.close()
    return closed_at


def test_client_disconnect_mid_stream_is_recorded(client, simulator):
    closed_at = _open_stream_and_close(
        client, {"tokens": 2000, "itl_ms": 5, "tag": "leaver"}, read_chunks=3
    )
    stats = simulator.wait_for_stats(lambda s: len(s["disconnects"]) == 1)
    (disconnect,) = stats["disconnects"]
    assert disconnect["tag"] == "leaver"
    assert disconnect["http_version"] == "1.1"
    assert disconnect["request_id"].startswith("req_")
    assert 3 <= disconnect["chunks_sent"] < 2000
    assert disconnect["t"] >= closed_at
    assert stats["streams_active"] == 0
    assert stats["streams_completed"] == 0


def test_disconnect_is_noticed_while_the_server_is_stalled(client, simulator):
    # The stall (60 s) far outlasts the wait below (10 s): the server must notice the
    # disconnect while it sleeps, not when it next tries to write.
    _open_stream_and_close(
        client, {"stall_after": 2, "stall_s": 60, "tag": "stalled"}, read_chunks=2
    )
    stats = simulator.wait_for_stats(lambda s: len(s["disconnects"]) == 1, timeout=10)
    assert stats["disconnects"][0]["chunks_sent"] == 2
    assert stats["disconnects"][0]["tag"] == "stalled"
    assert stats["streams_active"] == 0


def test_client_giving_up_before_the_headers_is_a_disconnect(simulator):
    body = {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "sim": {"header_delay_ms": 60_000, "tag": "impatient"},
    }
    with (
        httpx.Client(timeout=httpx.Timeout(10.0, read=0.2)) as http,
        pytest.raises(httpx.ReadTimeout),
    ):
        http.post(
            f"{simulator.base_url}/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json=body,
        )
    stats = simulator.wait_for_stats(lambda s: s["disconnects"], timeout=10)
    (disconnect,) = stats["disconnects"]
    assert disconnect["tag"] == "impatient"
    assert disconnect["stream"] is True
    assert disconnect["stream_started"] is False
    assert stats["streams_started"] == 0


def test_stream_accounting_adds_up(client, simulator):
    for sim in ({}, {"drop_after": 1}, {"truncate_after": 1}):
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_body={"sim": sim}
        )
        with contextlib.suppress(openai.APIConnectionError):
            list(stream)
    _open_stream_and_close(client, {"tokens": 2000, "itl_ms": 5}, read_chunks=1)
    stats = simulator.wait_for_stats(lambda s: s["streams_active"] == 0 and s["disconnects"])
    assert stats["streams_started"] == 4
    assert stats["streams_completed"] == 1
    assert stats["streams_faulted"] == 2
    assert [d["stream_started"] for d in stats["disconnects"]] == [True]


def test_concurrency_budget_refuses_beyond_c_per_key(client, simulator):
    simulator.configure(budget={"max_concurrent_per_key": 2})
    slow = {"extra_body": {"sim": {"ttft_ms": 30_000}}}
    held = [
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, **slow)
        for _ in range(2)
    ]
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert info.value.code == "rate_limit_exceeded"
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert int(info.value.response.headers["retry-after-ms"]) > 0
    with openai.OpenAI(base_url=simulator.base_url, api_key="sk-other", max_retries=0) as other:
        assert other.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices
    for stream in held:
        stream.close()
    simulator.wait_for_stats(lambda s: s["streams_active"] == 0)
    assert list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))


def test_rate_budget_refuses_a_burst(client, simulator):
    simulator.configure(budget={"rps_per_key": 0.5})
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert float(info.value.response.headers["retry-after-ms"]) > 0
    assert simulator.stats()["status_counts"] == {"200": 1, "429": 2}
    simulator.reset()
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices
