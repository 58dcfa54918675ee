"""The HTTP/1.1 connection on ``h11``: against the simulator and small hand-written servers.

The simulator (hypercorn) shows the ordinary path — streaming, keep-alive, TLS. The edge cases
need a server that misbehaves on purpose (cut bodies, stalls, huge heads, closes between
requests), so those are raw sockets here, each parsing requests with ``h11``'s server role.
A tiny pool (``_TinyPool``) stands in for the transport's pool: it keeps what ``on_release``
says is reusable and drops what ``is_stale``/``has_expired`` say is not.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import httpx2
import openai
import pytest
from http11_server import (
    WATCHDOG_S,
    Handler,
    LoopbackServer,
    Origin,
    loopback_servers,
    receive_request,
    respond,
    wait_for_eof,
)

from backend_ai.streaming.cancel import CancelScope
from backend_ai.streaming.http11 import (
    ConnectionNotAvailable,
    HTTP11Connection,
    IdleConnections,
)
from backend_ai.streaming.sockets import ConnectedSocket
from backend_ai.streaming.tls import TLSStream

pytestmark = pytest.mark.timeout(30)


class _TinyPool(httpx2.BaseTransport):
    """Just enough pool to exercise the connection's contract with its owner: it opens a
    connection when ``IdleConnections`` has none fit for the request."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float | None = None,
        max_idle: int = 10,
    ) -> None:
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self.discarded: list[HTTP11Connection] = []
        self.idle = IdleConnections(max_idle=max_idle, on_close=self.discarded.append)
        self.released: list[bool] = []
        self.opened: list[HTTP11Connection] = []
        self.not_available = 0

    def connection(self, origin: Origin) -> HTTP11Connection:
        kept = self.idle.take(origin)
        if kept is not None:
            return kept
        raw = socket.create_connection((origin.host, origin.port), timeout=WATCHDOG_S)
        sock: ConnectedSocket = raw
        if self._ssl_context is not None:
            sock = TLSStream.connect(
                raw, self._ssl_context, server_hostname=origin.host, timeout_s=WATCHDOG_S
            )
        connection = HTTP11Connection(
            sock, origin, keepalive_expiry=self._keepalive_expiry, on_release=self._release
        )
        self.opened.append(connection)
        return connection

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        for _ in range(3):
            try:
                return self.connection(Origin.of(request.url)).handle_request(request)
            except ConnectionNotAvailable:
                self.not_available += 1
        raise AssertionError("no connection was available three times")

    def _release(self, connection: HTTP11Connection, reusable: bool) -> None:
        self.released.append(reusable)
        self.idle.put(connection, reusable)

    def close(self) -> None:
        self.idle.close()


def _client(pool: _TinyPool, *, read: float = WATCHDOG_S) -> httpx2.Client:
    return httpx2.Client(
        transport=pool,
        timeout=httpx2.Timeout(WATCHDOG_S, read=read),
        headers={"Authorization": "Bearer sk-test-http11"},
    )


# -- the simulator over HTTP/1.1 -------------------------------------------------------------------
def _completion(tag: str, *, stream: bool, **sim: int) -> dict[str, object]:
    keys = {"ttft_ms": 0, "itl_ms": 1, "tokens": 20, "jitter": 0, **sim}
    return {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "p"}],
        "stream": stream,
        "sim": {**keys, "tag": tag},
    }


def _streamed_text(response: httpx2.Response) -> str:
    text = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:])["choices"]:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


def test_a_streamed_completion_matches_the_whole_one_and_both_share_one_connection(
    simulator,
) -> None:
    pool = _TinyPool()
    url = f"{simulator.base_url}/chat/completions"
    with _client(pool) as client:
        whole = client.post(url, json=_completion("whole", stream=False))
        with client.stream("POST", url, json=_completion("streamed", stream=True)) as response:
            assert response.http_version == "HTTP/1.1"
            assert response.headers["content-type"].startswith("text/event-stream")
            streamed = _streamed_text(response)
    assert whole.status_code == 200
    assert streamed == whole.json()["choices"][0]["message"]["content"] != ""
    assert len(pool.opened) == 1
    assert pool.released == [True, True]
    records = simulator.stats()["requests"]
    assert {r["http_version"] for r in records} == {"1.1"}
    assert len({r["connection_id"] for r in records}) == 1


def test_body_bytes_come_out_as_they_arrive_not_at_the_end(simulator) -> None:
    """The first chunk of a paced stream must reach the caller long before the stream ends."""
    pool = _TinyPool()
    url = f"{simulator.base_url}/chat/completions"
    body = _completion("paced", stream=True, itl_ms=25, tokens=20)
    with _client(pool) as client, client.stream("POST", url, json=body) as response:
        started = time.monotonic()
        reads = response.iter_raw()
        next(reads)
        first = time.monotonic() - started
        rest = sum(1 for _ in reads)
        total = time.monotonic() - started
    assert rest >= 5, "a paced stream arrives in many reads"
    assert first < total / 4


def test_tls_with_alpn_http11_streams_and_an_idle_tls_connection_is_not_stale(
    simulator_tls,
) -> None:
    context = simulator_tls.ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    pool = _TinyPool(ssl_context=context)
    url = f"{simulator_tls.base_url}/chat/completions"
    with _client(pool) as client:
        with client.stream("POST", url, json=_completion("tls", stream=True)) as response:
            assert _streamed_text(response)
        # TLS 1.3 session tickets may still sit unread on the socket: not a reason to drop it.
        (idle,) = pool.opened
        assert not idle.is_stale()
        second = client.post(url, json=_completion("tls2", stream=False))
        assert second.status_code == 200
        assert len(pool.opened) == 1
        assert pool.discarded == []


# -- hand-written servers ------------------------------------------------------------------------
@pytest.fixture
def serve() -> Iterator[Callable[[Handler], LoopbackServer]]:
    with loopback_servers() as start:
        yield start


def test_keep_alive_one_socket_serves_two_requests(serve) -> None:
    def handler(sock: socket.socket) -> None:
        while (received := receive_request(sock)) is not None:
            respond(sock, received[0].target)

    server = serve(handler)
    pool = _TinyPool()
    with _client(pool) as client:
        assert client.get(server.url + "one").content == b"/one"
        assert client.get(server.url + "two").content == b"/two"
    assert server.accepted == 1
    assert pool.released == [True, True]


def test_informational_responses_are_skipped_and_a_head_response_has_no_body(serve) -> None:
    def handler(sock: socket.socket) -> None:
        assert receive_request(sock) is not None
        sock.sendall(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        assert receive_request(sock) is not None
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        assert receive_request(sock) is not None
        respond(sock, b"third")
        wait_for_eof(sock)

    server = serve(handler)
    pool = _TinyPool()
    with _client(pool) as client:
        assert client.get(server.url).content == b"ok"
        head = client.head(server.url)
        assert head.headers["content-length"] == "10"
        assert head.content == b""
        assert client.get(server.url).content == b"third"
    assert server.accepted == 1
    assert pool.released == [True, True, True]


def test_idle_connections_hand_out_the_most_recent_of_an_origin_and_keep_at_most_max_idle(
    serve,
) -> None:
    def handler(sock: socket.socket) -> None:
        while (received := receive_request(sock)) is not None:
            respond(sock, received[0].target)

    server = serve(handler)
    closed: list[HTTP11Connection] = []
    idle = IdleConnections(max_idle=2, on_close=closed.append)
    connections = [server.connect(on_release=idle.put) for _ in range(3)]
    for connection in connections:
        connection.handle_request(httpx2.Request("GET", server.url)).read()
    first, second, third = connections
    assert closed == [first]
    assert first.is_closed()
    assert idle.take(Origin("http", "127.0.0.1", server.port + 1)) is None
    assert idle.take(server.origin) is third
    assert idle.take(server.origin) is second
    assert idle.take(server.origin) is None
    idle.close()
    third.handle_request(httpx2.Request("GET", server.url)).read()
    assert closed == [first, third], "released after close(): closed, not kept"
    second.close()


def test_the_openai_sdk_streams_over_http11(simulator) -> None:
    pool = _TinyPool()
    with _client(pool) as http_client:
        client = openai.OpenAI(
            base_url=simulator.base_url, api_key="sk-test-http11", http_client=http_client
        )
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "p"}],
            stream=True,
            extra_body={"sim": {"ttft_ms": 0, "itl_ms": 1, "tokens": 30, "tag": "sdk"}},
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert len(text) > 0
    assert len(pool.released) == 1
    stats = simulator.wait_for_stats(lambda s: s["streams_completed"] == 1, records=True)
    (record,) = stats["requests"]
    assert (record["http_version"], record["outcome"]) == ("1.1", "completed")


def test_a_kept_alive_connection_the_server_closed_is_stale_and_replaced(serve) -> None:
    closed = threading.Event()

    def handler(sock: socket.socket) -> None:
        received = receive_request(sock)
        assert received is not None
        respond(sock, b"once")
        sock.close()
        closed.set()

    server = serve(handler)
    pool = _TinyPool()
    with _client(pool) as client:
        assert client.get(server.url).content == b"once"
        assert closed.wait(WATCHDOG_S)
        (idle,) = pool.opened
        deadline = time.monotonic() + WATCHDOG_S
        while not idle.is_stale():  # the FIN may take a moment to arrive
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.get(server.url).content == b"once"
        assert pool.discarded == [idle]
    assert server.accepted == 2


def _answer_once_then_hang_up(sock: socket.socket) -> None:
    """Answer the first request, then read the next one (or the client's close at the end) and
    close the connection without a byte: the keep-alive race a client loses."""
    assert receive_request(sock) is not None
    respond(sock, b"first")
    receive_request(sock)
    sock.close()


@pytest.mark.parametrize("body", [b"", b"replayable"], ids=["get", "post"])
def test_losing_the_keep_alive_race_sends_the_request_again_on_a_new_connection(
    serve, body: bytes
) -> None:
    """The server closes a kept-alive connection just as the next request goes out (here: it
    reads it and hangs up without a byte): not processed, so it goes again on a new one."""

    server = serve(_answer_once_then_hang_up)
    pool = _TinyPool()
    with _client(pool) as client:
        assert client.request("POST", server.url, content=body).content == b"first"
        assert client.request("POST", server.url, content=body).content == b"first"
    assert pool.not_available == 1
    assert server.accepted == 2


def test_a_streamed_body_is_not_sent_again_after_a_lost_keep_alive_race(serve) -> None:
    server = serve(_answer_once_then_hang_up)
    pool = _TinyPool()
    with _client(pool) as client:
        assert client.get(server.url).content == b"first"
        with pytest.raises(httpx2.RemoteProtocolError):
            client.post(server.url, content=iter([b"once", b"only"]))
    assert pool.not_available == 0
    assert server.accepted == 1


def test_an_idle_connection_is_not_stale_and_expires_after_the_keepalive_expiry(serve) -> None:
    def handler(sock: socket.socket) -> None:
        assert receive_request(sock) is not None
        respond(sock, b"ok")
        wait_for_eof(sock)

    server = serve(handler)
    pool = _TinyPool(keepalive_expiry=60.0)
    with _client(pool) as client:
        client.get(server.url)
        (idle,) = pool.opened
        assert idle.is_idle()
        assert not idle.is_stale()
        assert not idle.has_expired()
        assert idle.has_expired(now=time.monotonic() + 61)


def test_connection_close_from_the_server_is_not_reused(serve) -> None:
    def handler(sock: socket.socket) -> None:
        received = receive_request(sock)
        assert received is not None
        respond(sock, b"bye", "Connection: close")
        wait_for_eof(sock)

    server = serve(handler)
    pool = _TinyPool()
    with _client(pool) as client:
        assert client.get(server.url).content == b"bye"
        assert client.get(server.url).content == b"bye"
    assert pool.released == [False, False]
    assert server.accepted == 2


def test_a_body_delimited_by_the_close_is_complete_and_not_reused(serve) -> None:
    def handler(sock: socket.socket) -> None:
        assert receive_request(sock) is not None
        sock.sendall(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        sock.close()

    server = serve(handler)
    pool = _TinyPool()
    with _client(pool) as client:
        assert client.get(server.url).content == b"until the end"
    assert pool.released == [False]


@pytest.mark.parametrize(
    "head_and_partial_body",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nwor",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello",
    ],
    ids=["mid-chunk", "between-chunks", "content-length"],
)
def test_a_body_cut_mid_way_is_an_error_never_a_clean_end(serve, head_and_partial_body) -> None:
    def handler(sock: socket.socket) -> None:
        assert receive_request(sock) is not None
        sock.sendall(head_and_partial_body)
        sock.close()

    server = serve(handler)
    pool = _TinyPool()
    received: list[bytes] = []
    with _client(pool) as client, client.stream("GET", server.url) as response:
        assert response.status_code == 200
        with pytest.raises(httpx2.RemoteProtocolError):
            received.extend(response.iter_raw())
    assert b"".join(received).startswith(b"hello")
    assert pool.released == [False]


@pytest.mark.parametrize("end_arrives", [True, False], ids=["end-received", "end-not-sent"])
def test_a_response_closed_before_its_end_is_kept_only_if_the_end_already_arrived(
    serve, end_arrives: bool
) -> None:
    """The SDK closes a stream at ``[DONE]``, before the body's last chunk is parsed."""
    end_sent = threading.Event()
    release_server = threading.Event()

    def handler(sock: socket.socket) -> None:
        assert receive_request(sock) is not None
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n[DONE]\r\n")
        assert release_server.wait(WATCHDOG_S)
        if end_arrives:
            sock.sendall(b"0\r\n\r\n")  # on loopback, in the client's buffer on return
        end_sent.set()
        wait_for_eof(sock)

    server = serve(handler)
    pool = _TinyPool()
    with _client(pool) as client:
        with client.stream("GET", server.url) as response:
            # Held: httpx2 closes the response as soon as an unfinished iterator is dropped.
            body = response.iter_raw()
            assert next(body) == b"[DONE]"
            release_server.set()
            assert end_sent.wait(WATCHDOG_S)
        assert pool.released == [end_arrives]


def test_a_server_that_closes_before_answering_is_a_protocol_error(serve) -> None:
    def handler(sock: socket.socket) -> None:
        assert receive_request(sock) is not None
        sock.close()

    server = serve(handler)
    pool = _TinyPool()
    with _client(pool) as client, pytest.raises(httpx2.RemoteProtocolError, match="without"):
        client.get(server.url)
    assert pool.released == [False]


def test_a_response_head_too_large_is_a_clean_error(serve) -> None:
    def handler(sock: socket.socket) -> None:
        assert receive_request(sock) is not None
        huge = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        with contextlib.suppress(OSError):  # the client may hang up first
            sock.sendall(b"HTTP/1.1 200 OK\r\n" + huge * 200)
        wait_for_eof(sock)

    server = serve(handler)
    pool = _TinyPool()
    with _client(pool) as client, pytest.raises(httpx2.RemoteProtocolError):
        client.get(server.url)
    assert pool.released == [False]


def test_a_read_timeout_before_the_head_and_mid_body(serve) -> None:
    def handler(sock: socket.socket) -> None:
        received = receive_request(sock)
        assert received is not None
        if received[0].target == b"/mid-body":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        wait_for_eof(sock)

    server = serve(handler)
    pool = _TinyPool()
    with _client(pool, read=0.2) as client:
        with pytest.raises(httpx2.ReadTimeout):
            client.get(server.url + "before-head")
        with client.stream("GET", server.url + "mid-body") as response:
            reads = response.iter_raw()
            assert next(reads) == b"hello"
            with pytest.raises(httpx2.ReadTimeout):
                next(reads)
    assert pool.released == [False, False]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_a_request_body_is_uploaded(serve, streamed: bool) -> None:
    payload = b"0123456789" * 50_000  # larger than socket buffers: several writes

    def handler(sock: socket.socket) -> None:
        while (received := receive_request(sock)) is not None:
            request, body = received
            framing = dict(request.headers)
            kind = b"chunked" if b"transfer-encoding" in framing else b"length"
            respond(sock, kind + b" " + str(len(body)).encode() + b" " + body[-10:])

    server = serve(handler)
    pool = _TinyPool()

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(payload), 65536):
            yield payload[start : start + 65536]

    content = pieces() if streamed else payload
    with _client(pool) as client:
        response = client.post(server.url, content=content)
    expected = b"chunked" if streamed else b"length"
    assert response.content == expected + b" 500000 0123456789"
    assert pool.released == [True]


def test_a_write_timeout_when_the_server_stops_reading_an_upload(serve) -> None:
    test_done = threading.Event()

    def handler(sock: socket.socket) -> None:
        sock.recv(1024)  # the head arrives; the body never gets read
        test_done.wait(WATCHDOG_S)

    server = serve(handler)
    pool = _TinyPool()
    client = httpx2.Client(transport=pool, timeout=httpx2.Timeout(WATCHDOG_S, write=0.2))
    with client, pytest.raises(httpx2.WriteTimeout):
        client.post(server.url, content=b"x" * 64_000_000)  # far beyond the socket buffers
    test_done.set()
    assert pool.released == [False]


def test_a_connection_serves_one_request_at_a_time(serve) -> None:
    def handler(sock: socket.socket) -> None:
        assert receive_request(sock) is not None
        respond(sock, b"ok")
        wait_for_eof(sock)

    server = serve(handler)
    connection = server.connect()
    response = connection.handle_request(httpx2.Request("GET", server.url))
    with pytest.raises(ConnectionNotAvailable):
        connection.handle_request(httpx2.Request("GET", server.url))
    response.read()
    response.close()
    assert connection.is_idle()
    with pytest.raises(ConnectionNotAvailable, match="does not serve"):
        connection.handle_request(httpx2.Request("GET", "http://elsewhere.invalid/"))
    connection.close()
    connection.close()
    assert connection.is_closed()
    with pytest.raises(ConnectionNotAvailable):
        connection.handle_request(httpx2.Request("GET", server.url))


# -- cancellation from another thread ------------------------------------------------------------
class _Stalling:
    """A server that answers ``/mid-body`` with a head and one chunk, then stalls; other paths
    get nothing at all. It records when it saw the client's end close."""

    def __init__(self) -> None:
        self.request_seen = threading.Event()
        self.eof_seen = threading.Event()

    def __call__(self, sock: socket.socket) -> None:
        received = receive_request(sock)
        if received is None:
            self.eof_seen.set()
            return
        if received[0].target == b"/mid-body":
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        self.request_seen.set()
        wait_for_eof(sock)
        self.eof_seen.set()


def _cancel_later(scope: CancelScope, after: threading.Event) -> threading.Thread:
    def cancel() -> None:
        after.wait(WATCHDOG_S)
        time.sleep(0.05)  # let the request block in its read
        scope.cancel()

    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()
    return thread


def test_a_cancel_wakes_a_request_blocked_before_the_response_head(serve) -> None:
    stalling = _Stalling()
    server = serve(stalling)
    pool = _TinyPool()
    scope = CancelScope()
    with _client(pool, read=60.0) as client:
        canceller = _cancel_later(scope, stalling.request_seen)
        started = time.monotonic()
        with scope, pytest.raises(httpx2.ReadError, match="cancelled"):
            client.get(server.url + "before-head")
        elapsed = time.monotonic() - started
        canceller.join(WATCHDOG_S)
    assert elapsed < WATCHDOG_S / 2, "the cancel, not the 60 s read timeout, ended the request"
    assert stalling.eof_seen.wait(WATCHDOG_S), "the server saw the socket shut down"
    assert pool.released == [False]


def test_a_cancel_wakes_a_request_blocked_mid_body(serve) -> None:
    stalling = _Stalling()
    server = serve(stalling)
    pool = _TinyPool()
    scope = CancelScope()
    with _client(pool, read=60.0) as client, scope:
        with client.stream("GET", server.url + "mid-body") as response:
            reads = response.iter_raw()
            assert next(reads) == b"first"
            canceller = _cancel_later(scope, stalling.request_seen)
            with pytest.raises(httpx2.ReadError, match="cancelled"):
                next(reads)
        canceller.join(WATCHDOG_S)
    assert stalling.eof_seen.wait(WATCHDOG_S)
    assert pool.released == [False]


def test_a_scope_cancelled_before_the_request_stops_it_at_once(serve) -> None:
    stalling = _Stalling()
    server = serve(stalling)
    pool = _TinyPool()
    scope = CancelScope()
    scope.cancel()
    with _client(pool, read=60.0) as client, scope, pytest.raises(httpx2.HTTPError):
        client.get(server.url + "before-head")
    assert pool.released == [False]
    assert stalling.eof_seen.wait(WATCHDOG_S)
    assert not stalling.request_seen.is_set(), "nothing was sent"


def test_a_late_cancel_leaves_a_connection_back_in_the_pool_alone(serve) -> None:
    def handler(sock: socket.socket) -> None:
        while (received := receive_request(sock)) is not None:
            respond(sock, received[0].target)

    server = serve(handler)
    pool = _TinyPool()
    first_scope = CancelScope()
    with _client(pool) as client:
        with first_scope:
            assert client.get(server.url + "first").content == b"/first"
            # The response is complete and released: the connection now belongs to the pool.
            first_scope.cancel()
        assert client.get(server.url + "second").content == b"/second"
    assert pool.released == [True, True]
    assert server.accepted == 1


def test_closing_a_connection_in_use_wakes_its_reader(serve) -> None:
    stalling = _Stalling()
    server = serve(stalling)
    connection = server.connect()
    request = httpx2.Request("GET", server.url + "mid-body", extensions={"timeout": {"read": 60}})
    response = connection.handle_request(request)
    reads = response.iter_raw()
    assert next(reads) == b"first"
    closer = threading.Timer(0.05, connection.close)
    closer.start()
    with pytest.raises(httpx2.ReadError, match="connection was closed"):
        next(reads)
    response.close()
    closer.join(WATCHDOG_S)
    assert connection.is_closed()
    assert stalling.eof_seen.wait(WATCHDOG_S)


def test_a_cancel_wakes_a_tls_stream_mid_body_and_the_server_sees_the_disconnect(
    simulator_tls,
) -> None:
    """On TLS the cancel shuts the socket under the TLS layer while another thread reads it."""
    context = simulator_tls.ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    pool = _TinyPool(ssl_context=context)
    url = f"{simulator_tls.base_url}/chat/completions"
    body = _completion("cancel-tls", stream=True, itl_ms=3000, tokens=5)
    scope = CancelScope()
    cancelled_at: list[float] = []

    def cancel() -> None:
        cancelled_at.append(time.monotonic())
        scope.cancel()

    with _client(pool, read=60.0) as client, scope:
        with client.stream("POST", url, json=body) as response:
            reads = response.iter_raw()
            next(reads)
            canceller = threading.Timer(0.3, cancel)  # the next token is 3 s away
            canceller.start()
            with pytest.raises(httpx2.ReadError, match="cancelled"):
                _ = list(reads)
            woke_after = time.monotonic() - cancelled_at[0]
        canceller.join(WATCHDOG_S)
    assert woke_after < 1.5, "the cancel, not the next token 3 s later, ended the read"
    stats = simulator_tls.wait_for_stats(lambda s: len(s["disconnects"]) == 1, timeout=10)
    assert stats["disconnects"][0]["tag"] == "cancel-tls"
    assert pool.released == [False]
