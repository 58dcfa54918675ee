"""Regression: data received for a stream but never read must be handed back to the connection.

A network read parses many DATA frames at once; when the response is closed after reading only
part of them, the rest were counted against the HTTP/2 connection's receive window but never
acknowledged. Each early close then shrinks the window for good — by up to one read — until
the upstream can send nothing more on the shared connection and every stream on it stalls.
This test looks at the connection's window itself (our transport's internals), so one early
close is enough to see a leak.
"""

from __future__ import annotations

import time

from backend_ai.app.services.parallel_streaming import PoolSettings, build_http_client


def _h2_connection(client):
    (connection,) = client._transport._pool.connections
    return connection._connection


def _window(connection) -> int:
    """The receive window the connection has announced plus what it will announce next."""
    manager = connection._h2_state._inbound_flow_control_window_manager
    return manager.current_window_size + manager._bytes_processed


def test_an_early_close_hands_unread_data_back_to_the_connection_window(simulator) -> None:
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "p"}],
        "stream": True,
        "max_tokens": 10_000,
        "sim": {"ttft_ms": 0, "itl_ms": 0, "tokens": 2_000, "jitter": 0, "tag": "early"},
    }
    url = f"{simulator.base_url}/chat/completions"
    client = build_http_client(PoolSettings(http2_prior_knowledge=True, timeout_s=10))
    client.headers["Authorization"] = "Bearer sk-test-flow-control"
    with client:
        assert client.post(url, json={**body, "stream": False}).status_code == 200
        window_before = _window(_h2_connection(client))
        with client.stream("POST", url, json=body) as response:
            chunks = response.iter_raw()
            next(chunks)
            # Let the upstream send everything, then make one more socket read: it parses a
            # socket-full of DATA frames, of which this stream consumes one.
            deadline = time.monotonic() + 10
            while simulator.stats()["streams_active"] and time.monotonic() < deadline:
                time.sleep(0.01)
            connection = _h2_connection(client)
            stream_id = 3  # the second request on this connection
            while connection._events[stream_id]:
                next(chunks)  # use up what earlier reads queued
            next(chunks)  # this one reads the socket
            unread = sum(
                e.flow_controlled_length
                for e in connection._events[stream_id]
                if hasattr(e, "data")
            )
            assert unread > 10_000, "the scenario needs data parsed but not read"
        window_after = _window(connection)
    assert window_after >= window_before
