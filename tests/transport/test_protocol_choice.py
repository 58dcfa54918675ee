"""Which protocol and which transport the pooled client picks.

Many OpenAI-compatible servers speak only HTTP/1.1: over TLS they answer ALPN with
``http/1.1``, and the client must then speak HTTP/1.1 on that same connection and keep it for
the next request. Behind a proxy the client leaves the job to httpx2's own transport.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import h11
import pytest
import trustme
from http11_server import LoopbackServer

from backend_ai.streaming import PoolSettings, build_http_client
from backend_ai.streaming.transport import UpstreamTransport


class _Http11TlsServer(LoopbackServer):
    """A TLS server that offers only ``http/1.1`` in ALPN and answers every request."""

    def __init__(self, ca: trustme.CA) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(self.context)
        self.context.set_alpn_protocols(["http/1.1"])
        self.requests = 0
        self.alpn: list[str | None] = []
        super().__init__(self._answer)

    def _answer(self, raw: socket.socket) -> None:
        try:
            with self.context.wrap_socket(raw, server_side=True) as sock:
                self.alpn.append(sock.selected_alpn_protocol())
                conn = h11.Connection(h11.SERVER)
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = sock.recv(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.EndOfMessage):
                        self.requests += 1
                        body = f"request {self.requests}".encode()
                        sock.sendall(
                            conn.send(
                                h11.Response(
                                    status_code=200, headers=[("content-length", str(len(body)))]
                                )
                            )
                            + conn.send(h11.Data(data=body))
                            + conn.send(h11.EndOfMessage())
                        )
                        conn.start_next_cycle()
                    elif isinstance(event, h11.ConnectionClosed):
                        return
        except (OSError, h11.ProtocolError):
            return


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def http11_tls_server(ca: trustme.CA) -> Iterator[_Http11TlsServer]:
    server = _Http11TlsServer(ca)
    yield server
    server.close()


@pytest.mark.timeout(30)
def test_tls_server_without_h2_in_alpn_gets_http11_on_a_kept_connection(
    ca: trustme.CA, http11_tls_server: _Http11TlsServer
) -> None:
    verify = ssl.create_default_context()
    ca.configure_trust(verify)
    url = f"https://127.0.0.1:{http11_tls_server.port}/v1/models"
    with build_http_client(PoolSettings(timeout_s=10), verify=verify) as client:
        first = client.get(url)
        second = client.get(url)
    assert (first.http_version, first.text) == ("HTTP/1.1", "request 1")
    assert (second.http_version, second.text) == ("HTTP/1.1", "request 2")
    assert http11_tls_server.alpn == ["http/1.1"]
    assert http11_tls_server.accepted == 1, "the first connection was not kept alive"


def test_a_proxy_in_the_environment_hands_requests_to_httpx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with build_http_client(PoolSettings()) as client:
        assert not isinstance(client._transport, UpstreamTransport)  # httpx2's own
    monkeypatch.delenv("HTTPS_PROXY")
    for name in ("HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with build_http_client(PoolSettings()) as client:
        assert isinstance(client._transport, UpstreamTransport)
