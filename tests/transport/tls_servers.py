"""Loopback TLS servers for the TLS stream's tests, with certificates from a ``trustme`` CA.

The server side uses the standard library's ``SSLSocket``, one thread per connection: a
server thread that only ever reads then writes never uses its ``SSL`` object from two threads.
What the tests vary is what the server does around the client's reads and writes: echo,
send session tickets at once, close with or without ``close_notify``; ``h2_echo`` is an HTTP/2
server for the pooled client's end-to-end test.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Sequence

import h2.config
import h2.connection
import h2.events
import trustme
from http11_server import LoopbackServer

__all__ = ["client_context", "echo", "h2_echo", "server_context", "tls_server"]


def server_context(
    ca: trustme.CA,
    *,
    hostnames: Sequence[str] = ("127.0.0.1",),
    alpn: Sequence[str] = ("h2", "http/1.1"),
    num_tickets: int | None = None,
) -> ssl.SSLContext:
    """A TLS 1.3 server context with a certificate from ``ca`` for ``hostnames``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    ca.issue_cert(*hostnames).configure_cert(context)
    context.set_alpn_protocols(list(alpn))
    if num_tickets is not None:
        context.num_tickets = num_tickets
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A verifying client context that trusts ``ca``."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def tls_server(context: ssl.SSLContext, handler: Callable[[ssl.SSLSocket], None]) -> LoopbackServer:
    """A loopback server that runs ``handler`` on each connection after the TLS handshake
    (a failed handshake ends that connection quietly: the tests look at the client's side)."""

    def serve(raw: socket.socket) -> None:
        try:
            sock = context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            return
        with sock:
            handler(sock)

    return LoopbackServer(serve)


def echo(sock: ssl.SSLSocket) -> None:
    """Send back everything received, until the client closes."""
    with contextlib.suppress(OSError):
        while data := sock.recv(65536):
            sock.sendall(data)


def h2_echo(sock: ssl.SSLSocket) -> None:
    """An HTTP/2 server (``h2``'s public API) that answers each request with its path, a
    newline and its body, within the flow-control windows both ways: it gives window back as
    request bodies arrive and sends response data only as the client's window allows."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    paths: dict[int, bytes] = {}
    bodies: dict[int, bytearray] = {}
    unsent: dict[int, memoryview] = {}
    with contextlib.suppress(OSError):
        while data := sock.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    paths[event.stream_id] = dict(event.headers or [])[b":path"]
                    bodies[event.stream_id] = bytearray()
                elif isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data or b""
                    conn.acknowledge_received_data(
                        event.flow_controlled_length or 0, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded):
                    sid = event.stream_id
                    answer = paths.pop(sid) + b"\n" + bytes(bodies.pop(sid))
                    headers = [(b":status", b"200"), (b"content-length", b"%d" % len(answer))]
                    conn.send_headers(sid, headers)
                    unsent[sid] = memoryview(answer)
                elif isinstance(event, h2.events.StreamReset):
                    unsent.pop(event.stream_id, None)
            _send_within_windows(conn, unsent)
            sock.sendall(conn.data_to_send())


def _send_within_windows(conn: h2.connection.H2Connection, unsent: dict[int, memoryview]) -> None:
    for sid, view in list(unsent.items()):
        while view:
            size = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(view))
            if size <= 0:
                break
            conn.send_data(sid, view[:size].tobytes())
            view = view[size:]
        if view:
            unsent[sid] = view
        else:
            conn.end_stream(sid)
            del unsent[sid]
