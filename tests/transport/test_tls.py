"""The TLS stream: one thread reads while others write, ends, wake-ups, handshake failures.

Every test talks to a real TLS 1.3 server on loopback (``tls_servers``) with certificates from
a throw-away ``trustme`` CA. Threads are joined with ``WATCHDOG_S`` and every test has a
pytest timeout, so a deadlock fails the test instead of stalling the run.
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator

import httpx2
import pytest
import trustme
from http11_server import (
    WATCHDOG_S,
    LoopbackServer,
    hang_up,
    receive_request,
    respond,
    wait_for_eof,
)
from tls_servers import client_context, echo, server_context, tls_server

from backend_ai.streaming.http11 import HTTP11Connection
from backend_ai.streaming.sockets import (
    ConnectedSocket,
    OpenedSocket,
    Origin,
    open_socket,
    tls_context,
)
from backend_ai.streaming.tls import TLSStream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def servers() -> Iterator[Callable[[LoopbackServer], LoopbackServer]]:
    """Registers servers to close after the test (and raises what their handlers raised)."""
    started: list[LoopbackServer] = []

    def keep(server: LoopbackServer) -> LoopbackServer:
        started.append(server)
        return server

    yield keep
    for server in started:
        server.close()
    errors = [error for server in started for error in server.errors]
    assert not errors, f"a server handler failed: {errors!r}"


def _connect(server: LoopbackServer, context: ssl.SSLContext) -> TLSStream:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=WATCHDOG_S)
    stream = TLSStream.connect(raw, context, server_hostname="127.0.0.1", timeout_s=WATCHDOG_S)
    stream.settimeout(WATCHDOG_S)
    return stream


def _open(
    port: int, context: ssl.SSLContext, *, http2: bool = True, timeout_s: float = 5.0
) -> OpenedSocket:
    return open_socket(
        Origin("https", "127.0.0.1", port),
        ssl_context=tls_context(context, http2=http2),
        http2=http2,
        http2_prior_knowledge=False,
        timeout_s=timeout_s,
    )


def _wait_readable(stream: TLSStream) -> None:
    """Until the raw socket has bytes (or its end) waiting: what a probe then reads is there."""
    readable, _, _ = select.select([stream.fileno()], [], [], WATCHDOG_S)
    assert readable, "the server sent nothing"


def _wait_for_probe(stream: TLSStream) -> None:
    """Until the probe says data or the end arrived; records before them (a late session
    ticket) make it look again."""
    while not stream.has_data_or_eof():
        _wait_readable(stream)


class _Thread(threading.Thread):
    """A thread whose exception (or hang) fails the test that joins it."""

    def __init__(self, target: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self._work = target
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._work()
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> object:
        self.join(WATCHDOG_S)
        assert not self.is_alive(), "the thread hung"
        if self.error is not None:
            raise self.error
        return self.result


# -- one reader, many writers ------------------------------------------------------------------
_HEADER = struct.Struct(">HII")  # writer, sequence number, payload length


def _payload(writer: int, seq: int, size: int) -> bytes:
    return random.Random(writer * 1_000_003 + seq).randbytes(size)


def _write_frames(stream: ConnectedSocket, writer: int, sizes: list[int]) -> None:
    for seq, size in enumerate(sizes):
        stream.sendall(_HEADER.pack(writer, seq, size) + _payload(writer, seq, size))


def _read_frames(stream: ConnectedSocket, expected: dict[int, list[int]]) -> int:
    """Read echoed frames until every writer's last one came back, checking each payload
    and each writer's order; the number of bytes read."""
    buffer = bytearray()
    next_seq = dict.fromkeys(expected, 0)
    total = 0
    while any(next_seq[w] < len(sizes) for w, sizes in expected.items()):
        data = stream.recv(65536)
        assert data, "the stream ended early"
        total += len(data)
        buffer += data
        while len(buffer) >= _HEADER.size:
            writer, seq, size = _HEADER.unpack_from(buffer)
            if len(buffer) < _HEADER.size + size:
                break
            assert seq == next_seq[writer], f"writer {writer}: frame {seq} out of order"
            assert buffer[_HEADER.size : _HEADER.size + size] == _payload(writer, seq, size)
            next_seq[writer] += 1
            del buffer[: _HEADER.size + size]
    assert not buffer
    return total


def _frame_sizes(writers: int, total: int) -> dict[int, list[int]]:
    rng = random.Random(7)
    sizes: dict[int, list[int]] = {}
    for writer in range(writers):
        left = total // writers
        sizes[writer] = []
        while left > 0:
            size = min(left, rng.choice([1, 17, 1500, 16_384, 65_536, 300_000]))
            sizes[writer].append(size)
            left -= size
    return sizes


def test_a_reader_blocked_in_recv_never_stops_writers_and_megabytes_come_back_intact(
    ca: trustme.CA, servers: Callable[[LoopbackServer], LoopbackServer]
) -> None:
    server = servers(tls_server(server_context(ca), echo))
    stream = _connect(server, client_context(ca))
    expected = _frame_sizes(writers=4, total=16 * 1024 * 1024)
    reader = _Thread(lambda: _read_frames(stream, expected))
    reader.start()  # blocks in recv until the first echo comes back
    writers = [_Thread(lambda w=w: _write_frames(stream, w, expected[w])) for w in expected]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.outcome()
    sent = sum(len(sizes) * _HEADER.size + sum(sizes) for sizes in expected.values())
    assert reader.outcome() == sent
    stream.close()


def test_session_tickets_arriving_while_the_client_writes_at_once_break_nothing(
    ca: trustme.CA, servers: Callable[[LoopbackServer], LoopbackServer]
) -> None:
    """The server sends TLS 1.3 session tickets right after the handshake; on each of many
    connections from ``open_socket`` the client's reader takes them in while its writer is
    already sending (in small writes, as an HTTP/2 connection's frames go out).

    Over an ``ssl.SSLSocket`` shared by the two threads (what ``open_socket`` returned before
    the TLS stream) this fails with Python 3.11.7 and OpenSSL 3.0 within the first few
    connections: the server receives corrupted records and breaks the connection off, so the
    writer's ``sendall`` fails; at times the process dies with a segmentation fault.
    """
    server = servers(tls_server(server_context(ca, num_tickets=16), echo))
    context = client_context(ca)
    expected = {0: [1024] * 256}
    for _ in range(20):
        sock = _open(server.port, context).sock
        sock.settimeout(WATCHDOG_S)
        reader = _Thread(lambda sock=sock: _read_frames(sock, expected))
        reader.start()
        _write_frames(sock, 0, expected[0])
        assert reader.outcome() == sum(expected[0]) + len(expected[0]) * _HEADER.size
        sock.close()
    assert server.accepted == 20


# -- the end of the stream -----------------------------------------------------------------------
def _close_notify(sock: ssl.SSLSocket) -> None:
    sock.sendall(b"last words")
    with contextlib.suppress(OSError):  # the client closes instead of answering close_notify
        sock.unwrap()


def _tcp_close(sock: ssl.SSLSocket) -> None:
    sock.sendall(b"last words")
    socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _cut_record(sock: ssl.SSLSocket) -> None:
    sock.sendall(b"last words")
    # The header of an application-data record that promises 64 bytes, and 3 of them.
    socket.socket.sendall(sock, b"\x17\x03\x03\x00\x40abc")
    socket.socket.shutdown(sock, socket.SHUT_RDWR)


@pytest.mark.parametrize("ending", [_close_notify, _tcp_close, _cut_record])
def test_the_end_of_the_stream_reads_as_empty_bytes_with_or_without_close_notify(
    ca: trustme.CA,
    servers: Callable[[LoopbackServer], LoopbackServer],
    ending: Callable[[ssl.SSLSocket], None],
) -> None:
    """``b""`` as ``SSLSocket`` gives with ``suppress_ragged_eofs=True``: HTTP framing finds a
    truncated message itself."""
    server = servers(tls_server(server_context(ca), ending))
    stream = _connect(server, client_context(ca))
    received = b""
    while data := stream.recv(4):
        received += data
    assert received == b"last words"
    assert stream.recv(100) == b""  # and stays ended
    stream.close()


def test_shutdown_from_another_thread_wakes_a_blocked_recv(
    ca: trustme.CA, servers: Callable[[LoopbackServer], LoopbackServer]
) -> None:
    def greet_then_wait(sock: ssl.SSLSocket) -> None:
        sock.sendall(b"hello")
        with contextlib.suppress(OSError):
            wait_for_eof(sock)

    server = servers(tls_server(server_context(ca), greet_then_wait))
    stream = _connect(server, client_context(ca))
    stream.settimeout(None)  # only the shutdown can end the second recv
    greeted = threading.Event()

    def read_twice() -> bytes:
        first = stream.recv(100)
        greeted.set()
        return first + stream.recv(100)

    reader = _Thread(read_twice)
    reader.start()
    assert greeted.wait(WATCHDOG_S)
    stream.shutdown(socket.SHUT_RDWR)
    assert reader.outcome() == b"hello"
    stream.close()


def test_a_timed_out_read_raises_timeout_error_and_the_stream_goes_on(
    ca: trustme.CA, servers: Callable[[LoopbackServer], LoopbackServer]
) -> None:
    """The HTTP/1.1 connection tells a read timeout by ``TimeoutError``, as over ``SSLSocket``."""

    def answer_on_demand(sock: ssl.SSLSocket) -> None:
        with contextlib.suppress(OSError):
            while data := sock.recv(100):
                sock.sendall(data.upper())

    server = servers(tls_server(server_context(ca), answer_on_demand))
    stream = _connect(server, client_context(ca))
    stream.settimeout(0.05)
    with pytest.raises(TimeoutError):
        stream.recv(100)
    assert stream.gettimeout() == 0.05
    stream.settimeout(WATCHDOG_S)
    stream.sendall(b"still there?")
    assert stream.recv(100) == b"STILL THERE?"
    stream.close()


# -- opening a connection ----------------------------------------------------------------------
def test_a_server_that_never_speaks_tls_is_a_connect_timeout(
    servers: Callable[[LoopbackServer], LoopbackServer],
) -> None:
    server = servers(LoopbackServer(wait_for_eof))
    with pytest.raises(httpx2.ConnectTimeout, match="TLS handshake"):
        _open(server.port, ssl.create_default_context(), timeout_s=0.3)


def test_the_connect_timeout_bounds_the_whole_handshake_not_each_read(
    servers: Callable[[LoopbackServer], LoopbackServer],
) -> None:
    """A server that trickles a handshake record a byte at a time, each byte well within the
    timeout, still runs into it: the timeout is one deadline for the whole handshake."""

    def trickle(sock: socket.socket) -> None:
        record = b"\x16\x03\x03\x40\x00" + bytes(0x4000)  # a 16 KiB handshake record
        give_up = time.monotonic() + 6 * timeout_s
        with contextlib.suppress(OSError):
            sock.recv(65536)  # the ClientHello
            for byte in record:
                sock.sendall(bytes([byte]))
                readable, _, _ = select.select([sock], [], [], timeout_s / 10)
                if readable or time.monotonic() > give_up:
                    break  # the client gave up and closed, or never will
        hang_up(sock)  # a client still waiting reads an end: a connect error, no timeout

    timeout_s = 0.5

    server = servers(LoopbackServer(trickle))
    with pytest.raises(httpx2.ConnectTimeout):
        _open(server.port, ssl.create_default_context(), timeout_s=timeout_s)


def test_a_certificate_from_an_unknown_ca_is_a_connect_error(
    ca: trustme.CA, servers: Callable[[LoopbackServer], LoopbackServer]
) -> None:
    server = servers(tls_server(server_context(ca), echo))
    with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED") as raised:
        _open(server.port, client_context(trustme.CA()))
    assert not isinstance(raised.value, httpx2.ConnectTimeout)


def test_a_certificate_for_another_host_is_a_connect_error(
    ca: trustme.CA, servers: Callable[[LoopbackServer], LoopbackServer]
) -> None:
    server = servers(tls_server(server_context(ca, hostnames=["upstream.example"]), echo))
    with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _open(server.port, client_context(ca))


@pytest.mark.parametrize(
    ("server_alpn", "client_http2", "speaks_http2"),
    [
        (("h2", "http/1.1"), True, True),
        (("http/1.1",), True, False),
        (("h2", "http/1.1"), False, False),
    ],
)
def test_alpn_decides_between_h2_and_http11(
    ca: trustme.CA,
    servers: Callable[[LoopbackServer], LoopbackServer],
    server_alpn: tuple[str, ...],
    client_http2: bool,
    speaks_http2: bool,
) -> None:
    server = servers(tls_server(server_context(ca, alpn=server_alpn), echo))
    opened = _open(server.port, client_context(ca), http2=client_http2)
    assert opened.sock.selected_alpn_protocol() == ("h2" if speaks_http2 else "http/1.1")
    assert opened.http2 is speaks_http2
    assert opened.sock.gettimeout() is None  # the reader waits as long as the connection lives
    opened.sock.close()


# -- is an idle connection still fit? ----------------------------------------------------------
def test_the_probe_tells_session_tickets_from_data_and_from_the_end(
    ca: trustme.CA, servers: Callable[[LoopbackServer], LoopbackServer]
) -> None:
    def on_cue(sock: ssl.SSLSocket) -> None:
        with contextlib.suppress(OSError):
            while sock.recv(100) == b"data":
                sock.sendall(b"unasked")
        # any other cue: close

    server = servers(tls_server(server_context(ca, num_tickets=4), on_cue))
    stream = _connect(server, client_context(ca))
    _wait_readable(stream)  # the session tickets
    assert not stream.has_data_or_eof()
    assert stream.gettimeout() == WATCHDOG_S  # put back after the check

    stream.sendall(b"data")
    _wait_for_probe(stream)
    assert stream.recv(100) == b"unasked", "the probe lost the data it read"

    stream.sendall(b"close")
    _wait_for_probe(stream)
    assert stream.recv(100) == b""
    stream.close()


def test_an_idle_http11_connection_over_tls_is_stale_only_once_the_server_closed(
    ca: trustme.CA, servers: Callable[[LoopbackServer], LoopbackServer]
) -> None:
    hang_up = threading.Event()

    def one_request_then_hang_up(sock: ssl.SSLSocket) -> None:
        if receive_request(sock) is not None:
            respond(sock, b"ok")
            hang_up.wait(WATCHDOG_S)

    server = servers(
        tls_server(server_context(ca, alpn=["http/1.1"], num_tickets=4), one_request_then_hang_up)
    )
    stream = _connect(server, client_context(ca))
    connection = HTTP11Connection(stream, Origin("https", "127.0.0.1", server.port))
    _wait_readable(stream)  # the session tickets
    assert not connection.is_stale()

    with httpx2.Client(transport=_OneConnection(connection)) as client:
        assert client.get(f"https://127.0.0.1:{server.port}/").text == "ok"
    assert not connection.is_closed()

    hang_up.set()  # the server closes the idle connection
    _wait_readable(stream)
    assert connection.is_stale()
    connection.close()


class _OneConnection(httpx2.BaseTransport):
    def __init__(self, connection: HTTP11Connection) -> None:
        self._connection = connection

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return self._connection.handle_request(request)
