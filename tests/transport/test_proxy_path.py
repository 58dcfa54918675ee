"""Behind a proxy the pooled client is httpx2's own ``Client``, and a run goes through the proxy.

The proxy is a real forward proxy on loopback (``http.server``: absolute-form requests,
forwarded with ``http.client``); the upstream is the simulator. What is checked is what a user
behind ``HTTP_PROXY`` relies on: the SDK accepts the client, every request reaches the
upstream through the proxy, and the run keeps its protocol (each section whole, ``done``).
"""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse
from collections.abc import Iterator

import httpx2
import openai
import pytest

from backend_ai.simulator import SimulatorProcess
from backend_ai.streaming import PoolSettings, StreamConfig, build_http_client
from backend_ai.streaming import create_parallel_stream as run
from tests.support.protocol import check_protocol
from tests.support.sse import parse_frames

#: Headers that belong to one hop, not to the request the proxy forwards.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


class _ForwardProxy(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _ForwardProxy

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _forward(self) -> None:
        target = urllib.parse.urlsplit(self.path)  # absolute form: a proxy's request line
        with self.server.lock:
            self.server.seen.append((self.command, self.path))
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(self.command, path, body=body, headers=headers)
            answer = upstream.getresponse()
            payload = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in HOP_BY_HOP | {"content-length"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_ForwardProxy]:
    server = _ForwardProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in ("HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.setenv("http_proxy", server.url)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_behind_a_proxy_a_run_streams_through_it(
    proxy: _ForwardProxy, simulator: SimulatorProcess
) -> None:
    with build_http_client(PoolSettings(timeout_s=30)) as http_client:
        assert isinstance(http_client, httpx2.Client)
        client = openai.OpenAI(
            api_key="sk-test-proxy", base_url=simulator.base_url, http_client=http_client
        )
        configs = [StreamConfig(name, f"Say something about {name}.") for name in ("a", "b")]
        body = "".join(run(client, configs))
    texts = check_protocol(parse_frames(body))
    assert sorted(texts) == ["a", "b"]
    assert all(texts.values()), texts
    url = f"{simulator.base_url}/chat/completions"
    assert proxy.seen == [("POST", url), ("POST", url)]


def test_without_a_proxy_the_run_never_reaches_one(
    proxy: _ForwardProxy, simulator: SimulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counterpart: with the variables gone the client sends with our own transport."""
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name)
    settings = PoolSettings(timeout_s=30, http2_prior_knowledge=True)
    with build_http_client(settings) as http_client:
        client = openai.OpenAI(
            api_key="sk-test-proxy", base_url=simulator.base_url, http_client=http_client
        )
        body = "".join(run(client, [StreamConfig("a", "Say something.")]))
        response = http_client.get(f"{simulator.base_url}/models")
    assert check_protocol(parse_frames(body))["a"]
    assert response.http_version == "HTTP/2"  # h2c prior knowledge: only our transport has it
    assert proxy.seen == []
