"""The HTTP/2 connection and transport at the level of single requests (``http2.py``,
``transport.py``), against a scripted h2 server on loopback (``hostile_server.py``).

What the engine-level scenarios cannot pin down: the reset a cancel sends before any response
headers, a read timeout that pings on the connection cannot postpone, a stream limit lowered
mid-connection, and the GOAWAY frames taken out of the byte stream wherever reads split them.
"""

from __future__ import annotations

import threading
import time

import h2.errors
import h2.events
import h2.settings
import httpx2
import pytest
from hostile_server import HostileServer, Peer, goaway_frame

from backend_ai.streaming import PoolSettings, build_http_client
from backend_ai.streaming.cancel import CancelScope
from backend_ai.streaming.http2 import _GoawayFilter


def _client(**settings: object) -> httpx2.Client:
    return build_http_client(PoolSettings(http2_prior_knowledge=True, **settings))  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_a_cancel_before_the_response_headers_resets_the_stream_and_keeps_the_connection() -> None:
    reset_seen = threading.Event()
    cancelled_at: list[float] = []
    reset_at: list[float] = []

    def script(peer: Peer) -> None:
        (first,) = peer.wait_requests(1)
        peer.wait(lambda: peer.requests[first].reset_code is not None, 10, "RST_STREAM")
        reset_at.append(time.monotonic())
        reset_seen.set()
        assert peer.requests[first].reset_code == h2.errors.ErrorCodes.CANCEL
        (second,) = peer.wait_requests(1)
        peer.respond(second)
        peer.conn.send_data(second, b"still here", end_stream=True)
        peer.flush()
        peer.serve_forever()

    with HostileServer(script) as server, _client(timeout_s=10) as client:
        scope = CancelScope()
        failure: list[BaseException] = []

        def request() -> None:
            with scope:
                try:
                    client.get(server.base_url)
                except httpx2.TransportError as exc:
                    failure.append(exc)

        worker = threading.Thread(target=request)
        worker.start()
        time.sleep(0.3)  # the request is out, its headers will never come
        cancelled_at.append(time.monotonic())
        scope.cancel()
        worker.join(5)
        assert not worker.is_alive(), "the cancelled request did not return"
        assert failure, "the cancelled request did not fail"
        assert reset_seen.wait(5), "no RST_STREAM reached the server"
        assert client.get(server.base_url).content == b"still here"
        assert server.connections == 1
        assert server.errors == []
    print(f"RST_STREAM seen {1000 * (reset_at[0] - cancelled_at[0]):.2f} ms after the cancel")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size", [300, 40_000])
def test_the_last_data_frame_of_a_request_ends_its_stream(size: int) -> None:
    """No empty DATA frame to end the stream; a body that fits in one frame (every JSON
    request the SDK sends) goes out with its headers in one write, so the server has the
    whole request in one read."""
    reads: list[list[h2.events.Event]] = []

    def script(peer: Peer) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            events = peer.pump()
            if events:
                reads.append(events)
            if any(isinstance(e, h2.events.StreamEnded) for e in events):
                break
        (sid,) = [e.stream_id for r in reads for e in r if isinstance(e, h2.events.RequestReceived)]
        peer.respond(sid)
        peer.conn.send_data(sid, b"ok", end_stream=True)
        peer.flush()
        peer.serve_forever()

    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    with HostileServer(script) as server, _client(timeout_s=10) as client:
        response = client.post(server.base_url, content=body)
    assert response.status_code == 200
    assert response.content == b"ok"
    events = [e for r in reads for e in r]
    (request,) = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert request.stream_ended is None  # the headers do not end a request with a body
    data = [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert b"".join(e.data for e in data) == body
    assert all(e.data for e in data)
    assert data[-1].stream_ended is not None
    assert all(e.stream_ended is None for e in data[:-1])
    if size <= 16_384:  # the server's largest frame: the whole body in one frame, one read
        assert len(data) == 1
        assert any(isinstance(e, h2.events.RequestReceived) for e in reads[-1])


@pytest.mark.timeout(30)
def test_pings_on_the_connection_do_not_postpone_a_read_timeout() -> None:
    def script(peer: Peer) -> None:
        (sid,) = peer.wait_requests(1)
        peer.respond(sid)
        peer.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not peer.closed:
            peer.conn.ping(b"12345678")
            peer.flush()
            peer.pump(0.02)

    with HostileServer(script) as server, _client(timeout_s=0.5) as client:
        started = time.monotonic()
        with pytest.raises(httpx2.ReadTimeout), client.stream("GET", server.base_url) as response:
            response.read()
        waited = time.monotonic() - started
    # Pings arrived every 20 ms for 10 s: only a per-stream deadline ends this before that.
    assert waited < 5, f"the read timeout fired after {waited:.1f} s"


@pytest.mark.timeout(30)
def test_a_lowered_stream_limit_sends_new_requests_to_another_connection() -> None:
    def script(peer: Peer) -> None:
        if peer.index > 0:
            return peer.serve_forever()
        first, second = peer.wait_requests(2)
        peer.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
        peer.flush()
        peer.wait(lambda: peer.settings_acked >= 2, 5, "SETTINGS ACK")
        for sid in (first, second):
            peer.respond(sid)
            peer.conn.send_data(sid, b"open stream", end_stream=False)
        peer.flush()
        time.sleep(0.5)  # a third request arrives meanwhile and must not wait for these
        for sid in (first, second):
            peer.conn.send_data(sid, b" done", end_stream=True)
        peer.flush()
        return peer.serve_forever()

    with HostileServer(script) as server, _client(timeout_s=10) as client:
        bodies: dict[str, bytes] = {}

        def get(name: str) -> None:
            bodies[name] = client.get(server.base_url).content

        threads = [threading.Thread(target=get, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        get("c")
        for thread in threads:
            thread.join(10)
        assert bodies["a"] == bodies["b"] == b"open stream done"
        assert bodies["c"]
        assert server.connections == 2
        assert server.errors == []


def test_goaway_frames_are_found_wherever_the_reads_split_them() -> None:
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    data = b"\x00\x00\x05\x00\x00\x00\x00\x00\x01hello"
    goaway = goaway_frame(7, h2.errors.ErrorCodes.NO_ERROR)
    stream = settings + data + goaway + data
    for split in range(1, len(stream)):
        for second_split in (split, min(len(stream), split + 3), len(stream)):
            pieces = [stream[:split], stream[split:second_split], stream[second_split:]]
            gone = _GoawayFilter()
            passed = b""
            goaways = []
            for piece in pieces:
                for part in gone.feed(piece):
                    if isinstance(part, tuple):
                        goaways.append(part)
                    else:
                        passed += part
            assert goaways == [(7, 0)], split
            assert passed == settings + data + data, split
