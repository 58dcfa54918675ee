"""Loopback TLS servers for the TLS stream's tests, with certificates from a ``trustme`` CA.

The server side uses the standard library's ``SSLSocket``, one thread per connection: a
server thread that only ever reads then writes never uses its ``SSL`` object from two threads.
What the tests vary is what the server does around the client's reads and writes: echo,
send session tickets at once, close with or without ``close_notify``, never speak TLS at all.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Sequence

import trustme
from http11_server import LoopbackServer

__all__ = ["client_context", "echo", "server_context", "tls_server"]


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
