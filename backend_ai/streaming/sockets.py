"""Opening a connection to an upstream: TCP, then TLS with ALPN, and which protocol to speak.

The protocol is decided here, once per connection, from what the two sides agreed: over TLS
the server's ALPN answer (``h2`` or ``http/1.1``); over cleartext ``http://`` HTTP/2 only with
prior knowledge (h2c), since there is nothing to negotiate with.

A TLS connection is a ``TLSStream`` (``backend_ai.streaming.tls``), never an ``ssl.SSLSocket``:
an HTTP/2 connection reads on one thread while others write, which an ``SSLSocket`` does not
allow. Connections take either kind through the small ``ConnectedSocket`` protocol.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Protocol

import httpx2

from backend_ai.streaming.tls import TLSStream

__all__ = ["ConnectedSocket", "OpenedSocket", "Origin", "open_socket", "tls_context"]


class ConnectedSocket(Protocol):
    """What a connection uses of its socket: a plain ``socket.socket`` or a ``TLSStream``.

    ``shutdown`` wakes a thread blocked in ``recv`` (it reads the end of the stream); a timeout
    set with ``settimeout`` raises ``TimeoutError`` from ``recv`` and ``sendall``.
    """

    def recv(self, bufsize: int, /) -> bytes: ...

    def sendall(self, data: bytes, /) -> None: ...

    def shutdown(self, how: int, /) -> None: ...

    def close(self) -> None: ...

    def fileno(self) -> int: ...

    def settimeout(self, value: float | None, /) -> None: ...

    def gettimeout(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: httpx2.URL) -> Origin:
        scheme = url.scheme
        port = url.port or (443 if scheme == "https" else 80)
        return cls(scheme, url.host, port)

    @property
    def authority(self) -> bytes:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = host if self.port == default else f"{host}:{self.port}"
        return text.encode("ascii")


@dataclass(frozen=True, slots=True)
class OpenedSocket:
    sock: ConnectedSocket
    http2: bool


def open_socket(
    origin: Origin,
    *,
    ssl_context: ssl.SSLContext,
    http2: bool,
    http2_prior_knowledge: bool,
    timeout_s: float | None,
) -> OpenedSocket:
    """Connect, and over TLS negotiate the protocol; raise ``httpx2.ConnectError`` on failure.

    The returned socket is blocking, without a timeout: its reader waits for the server for as
    long as the connection lives, and timeouts are kept per stream, not per socket.
    """
    try:
        sock = socket.create_connection((origin.host, origin.port), timeout=timeout_s)
    except TimeoutError as exc:
        raise httpx2.ConnectTimeout(f"connecting to {origin.host}:{origin.port} timed out") from exc
    except OSError as exc:
        raise httpx2.ConnectError(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if origin.scheme != "https":
        sock.settimeout(None)
        return OpenedSocket(sock, http2=http2 and http2_prior_knowledge)
    try:
        tls = TLSStream.connect(sock, ssl_context, server_hostname=origin.host, timeout_s=timeout_s)
    except TimeoutError as exc:
        sock.close()
        raise httpx2.ConnectTimeout(f"TLS handshake with {origin.host} timed out") from exc
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise httpx2.ConnectError(f"TLS handshake with {origin.host} failed: {exc}") from exc
    tls.settimeout(None)
    return OpenedSocket(tls, http2=http2 and tls.selected_alpn_protocol() == "h2")


def tls_context(verify: ssl.SSLContext | str | bool, *, http2: bool) -> ssl.SSLContext:
    """The client TLS context: the caller's, a CA file's, the system's, or no verification;
    it offers ``h2`` in ALPN when HTTP/2 is on, ``http/1.1`` always.

    Renegotiation is refused: in the middle of one a write would have to wait for the
    server's answer, which ``TLSStream`` does not do, and HTTP/2 forbids it anyway.
    """
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify)
    elif verify:
        context = ssl.create_default_context()
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context
