"""HTTP/2 behaviour checked with a raw ``h2`` client, which controls exactly which frames go out.

httpcore 1.0.9 sends no RST_STREAM when a response is closed early, so client resets are
produced here by hand.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import httpx
import pytest

API_KEY = "sk-simulator-test"
MESSAGES = [{"role": "user", "content": "One prompt, many streams."}]


class RawH2Client:
    """One HTTP/2 connection (prior knowledge) driven frame by frame."""

    def __init__(self, origin: str) -> None:
        url = httpx.URL(origin)
        self.authority = f"{url.host}:{url.port}"
        self.sock = socket.create_connection((url.host, url.port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        # A large window: the server is never held back by flow control.
        self.conn.increment_flow_control_window(2**30)
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**30})
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def request(self, body: dict) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", self.authority),
            (":path", "/v1/chat/completions"),
            ("authorization", f"Bearer {API_KEY}"),
            ("content-type", "application/json"),
        ]
        self.conn.send_headers(stream_id, headers)
        self.conn.send_data(stream_id, json.dumps(body).encode(), end_stream=True)
        self.flush()
        return stream_id

    def events(self) -> Iterator[h2.events.Event]:
        while True:
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                yield event
            self.flush()

    def read_until(self, predicate: Callable[[h2.events.Event], bool]) -> h2.events.Event:
        for event in self.events():
            assert not isinstance(event, h2.events.ConnectionTerminated), event
            if predicate(event):
                return event
        raise AssertionError("unreachable")

    def reset(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
        self.flush()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_h2(simulator) -> Iterator[RawH2Client]:
    client = RawH2Client(simulator.origin)
    yield client
    client.close()


def _stream_body(sim: dict) -> dict:
    return {"model": "m", "messages": MESSAGES, "stream": True, "sim": sim}


def _content_data(stream_id: int) -> Callable[[h2.events.Event], bool]:
    return lambda e: (
        isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id and b"content" in e.data
    )


def _ended(stream_id: int) -> Callable[[h2.events.Event], bool]:
    return lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == stream_id


def test_stream_reset_by_the_client_is_recorded_and_the_connection_survives(simulator, raw_h2):
    leaving = raw_h2.request(_stream_body({"tokens": 2000, "itl_ms": 5, "tag": "h2-leaver"}))
    raw_h2.read_until(_content_data(leaving))
    raw_h2.reset(leaving)
    stats = simulator.wait_for_stats(lambda s: len(s["disconnects"]) == 1)
    assert stats["disconnects"][0]["tag"] == "h2-leaver"
    assert stats["disconnects"][0]["http_version"] == "2"

    staying = raw_h2.request(_stream_body({"tokens": 3}))
    raw_h2.read_until(_ended(staying))
    stats = simulator.stats()
    assert stats["connections_accepted"] == 1
    assert stats["connections"][0]["requests"] == 2
    assert stats["streams_completed"] == 1


def test_reset_is_recorded_even_when_chunks_have_no_delay(simulator, raw_h2):
    """Regression: with itl_ms=0 the stream loop never slept, so the disconnect watcher
    never ran and a reset stream was recorded as completed with every chunk counted."""
    tokens = 30_000
    leaving = raw_h2.request(_stream_body({"tokens": tokens, "itl_ms": 0, "ttft_ms": 0}))
    raw_h2.read_until(_content_data(leaving))
    raw_h2.reset(leaving)
    stats = simulator.wait_for_stats(lambda s: s["streams_active"] == 0, timeout=30)
    assert stats["streams_completed"] == 0
    assert len(stats["disconnects"]) == 1
    assert stats["disconnects"][0]["chunks_sent"] < tokens


def test_more_than_a_thousand_requests_share_one_connection(simulator, raw_h2):
    """hypercorn's default sends GOAWAY after 1000 requests on a connection, which kills the
    streams in flight; a load test passes that in seconds."""
    batch, batches = 100, 11
    body = {"model": "m", "messages": MESSAGES, "sim": {"tokens": 1, "ttft_ms": 0}}
    for _ in range(batches):
        open_streams = {raw_h2.request(body) for _ in range(batch)}
        for event in raw_h2.events():
            assert not isinstance(event, h2.events.ConnectionTerminated), event
            if isinstance(event, h2.events.StreamEnded):
                open_streams.discard(event.stream_id)
                if not open_streams:
                    break
    stats = simulator.stats(records=False)
    assert stats["connections_accepted"] == 1
    assert stats["connections"][0]["requests"] == batch * batches
    assert stats["status_counts"] == {"200": batch * batches}
