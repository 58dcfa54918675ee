"""Flow control: data received for a stream but never read must not cost the connection window.

A stream closed early leaves data behind that the server sent against the connection's
receive window. If that window were handed back only as the consumer reads, every early close
would shrink it for good, until the server could send nothing more on the shared connection.
Here a hand-written server fills each stream's whole window at once; the client reads one
piece and closes, more times than the connection window holds — and a later request on the
same connection must still get its full body.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import pytest

from backend_ai.app.services.parallel_streaming import PoolSettings, build_http_client
from backend_ai.app.services.parallel_streaming.http2 import CONNECTION_WINDOW, STREAM_WINDOW

_PIECE = b"x" * 16_000


class _WindowFillingServer:
    """Answers ``/fill`` with as much data as the stream window allows (never ending) and
    ``/small`` with a short complete body."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            self._serve_streams(sock)
        except (ConnectionError, OSError):
            pass
        except BaseException as exc:  # surfaced by the test, not lost in a thread
            self.errors.append(exc)

    def _serve_streams(self, sock: socket.socket) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        filling: set[int] = set()
        with sock:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        path = dict(event.headers)[b":path"]
                        conn.send_headers(event.stream_id, [(":status", "200")])
                        if path == b"/small":
                            conn.send_data(event.stream_id, b"complete", end_stream=True)
                        else:
                            filling.add(event.stream_id)
                    elif isinstance(event, h2.events.StreamReset):
                        filling.discard(event.stream_id)
                for stream_id in filling:
                    while True:
                        window = min(
                            conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size
                        )
                        if window <= 0:
                            break
                        conn.send_data(stream_id, _PIECE[:window])
                sock.sendall(conn.data_to_send())

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def server() -> Iterator[_WindowFillingServer]:
    server = _WindowFillingServer()
    yield server
    server.close()


@pytest.mark.timeout(60)
def test_early_closes_never_shrink_the_connection_window(server: _WindowFillingServer) -> None:
    client = build_http_client(PoolSettings(http2_prior_knowledge=True, timeout_s=5))
    base = f"http://127.0.0.1:{server.port}"
    closes = CONNECTION_WINDOW // STREAM_WINDOW + 4
    with client:
        for _ in range(closes):
            with client.stream("GET", f"{base}/fill") as response:
                received = 0
                for data in response.iter_raw():
                    received += len(data)
                    if received >= STREAM_WINDOW // 2:
                        break  # most of the window is still unread when the response closes
        # Every stream above left up to a window of data unread: together more than the
        # connection window. The connection must still carry a new response.
        assert client.get(f"{base}/small").content == b"complete"
    assert server.connections == 1
    assert server.errors == []
