"""Flow control: data received for a stream but never read must not cost the connection window.

A stream closed early leaves data behind that the server sent against the connection's
receive window. If that window were handed back only as the consumer reads, every early close
would shrink it for good, until the server could send nothing more on the shared connection.
Here a hand-written server fills each stream's whole window at once; the client reads one
piece and closes, more times than the connection window holds — and a later request on the
same connection must still get its full body.
"""

from __future__ import annotations

import pytest
from hostile_server import HostileServer, Peer

from backend_ai.streaming import PoolSettings, build_http_client
from backend_ai.streaming.http2 import CONNECTION_WINDOW, STREAM_WINDOW

_PIECE = b"x" * 16_000


def _fill_windows(peer: Peer) -> None:
    """Answers ``/fill`` with as much data as the stream window allows (never ending) and
    ``/small`` with a short complete body."""
    answered: set[int] = set()
    filling: set[int] = set()
    while not peer.closed and not peer.server.stopping:
        peer.pump(0.02)
        for sid, request in list(peer.requests.items()):
            if sid in answered or not request.complete:
                continue
            answered.add(sid)
            peer.respond(sid)
            if request.headers[":path"].endswith("/small"):
                peer.conn.send_data(sid, b"complete", end_stream=True)
            else:
                filling.add(sid)
        for sid in list(filling):
            if peer.requests[sid].reset_code is not None:
                filling.discard(sid)
                continue
            while (window := min(peer.conn.local_flow_control_window(sid), len(_PIECE))) > 0:
                peer.conn.send_data(sid, _PIECE[:window])
        peer.flush()


@pytest.mark.timeout(60)
def test_early_closes_never_shrink_the_connection_window() -> None:
    client = build_http_client(PoolSettings(http2_prior_knowledge=True, timeout_s=5))
    closes = CONNECTION_WINDOW // STREAM_WINDOW + 4
    with HostileServer(_fill_windows) as server, client:
        base = server.base_url
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
