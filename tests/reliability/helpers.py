"""Tools of the reliability tests: whole-stream requests checked with the shared protocol
checker (``tests.support.protocol``), a raw-socket client, a probe of a gunicorn worker's
threads, descriptors, connections and memory, and a scripted upstream.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support.protocol import SectionOutcome, check_stream
from tests.support.sse import parse_sse_body
from tests.support.waiting import wait_until

__all__ = [
    "CANARY_KEY",
    "ROUTES",
    "ProcSample",
    "ProcessProbe",
    "RawClient",
    "RouteCase",
    "ScriptedUpstream",
    "SectionOutcome",
    "StreamResult",
    "check_stream",
    "http_response",
    "parse_sse_body",
    "post_stream",
    "wait_until",
]


#: The upstream API key of every test service: it must never appear in a log line or response.
CANARY_KEY = f"sk-canary-{secrets.token_hex(16)}"


# -- the routes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteCase:
    """A streaming route with a body whose upstream text is deterministic on the simulator.

    Tarot draws its cards at random on the server, so its one section's text differs from
    request to request; for it only the chunk count is comparable (``deterministic=False``).
    """

    name: str
    path: str
    body: Mapping[str, Any]
    sections: tuple[str, ...]
    faulty: str  # the section a fault is aimed at
    deterministic: bool = True


ROUTES: dict[str, RouteCase] = {
    "dream": RouteCase(
        "dream",
        "dream/interpret-stream",
        {"dream": "I was flying over a city of glass"},
        ("summary", "symbols", "recommendations"),
        "symbols",
    ),
    "iching": RouteCase(
        "iching",
        "iching/reading-stream",
        {"question": "Should I move?", "hexagram": 7},
        ("hexagram", "interpretation", "guidance"),
        "interpretation",
    ),
    "tarot": RouteCase(
        "tarot",
        "tarot/three-card-stream",
        {"question": "What now?"},
        ("reading",),
        "reading",
        deterministic=False,
    ),
    "compare": RouteCase(
        "compare",
        "compare/stream",
        {"prompt": "Explain backpressure", "models": ["gpt-4o", "gpt-4o-mini", "gpt-4.1-mini"]},
        ("gpt-4o", "gpt-4o-mini", "gpt-4.1-mini"),
        "gpt-4o-mini",
    ),
}


@dataclass
class StreamResult:
    status: int
    headers: httpx.Headers
    events: list[dict[str, Any]]
    comments: list[str]
    elapsed_s: float
    outcomes: dict[str, SectionOutcome] = field(default_factory=dict)


def post_stream(
    http: httpx.Client, base_url: str, path: str, body: Mapping[str, Any], **kwargs: Any
) -> StreamResult:
    """POST, read the whole SSE stream and check its protocol."""
    started = time.monotonic()
    response = http.post(base_url + path, json=dict(body), **kwargs)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("text/event-stream")
    events, comments = parse_sse_body(response.text)
    return StreamResult(
        status=response.status_code,
        headers=response.headers,
        events=events,
        comments=comments,
        elapsed_s=elapsed,
        outcomes=check_stream(events),
    )


# -- a raw HTTP/1.1 client, for disconnects at exact points -----------------------------------


class RawClient:
    """One streaming POST over a plain socket, closed exactly when the test says.

    ``close(reset=True)`` sends a TCP RST (``SO_LINGER`` 0), the abrupt end of a killed
    browser tab; ``reset=False`` a normal FIN.
    """

    def __init__(self, base_url: str, *, rcvbuf: int | None = None, timeout: float = 10.0):
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the advertised window is small too
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((self._host, self._port))
        self.received = b""

    def send_post(self, path: str, body: Mapping[str, Any]) -> None:
        payload = json.dumps(body).encode()
        head = (
            f"POST /{path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self.sock.sendall(head + payload)

    def read_until(self, marker: bytes, *, count: int = 1) -> bytes:
        """Read until ``marker`` was received ``count`` times; AssertionError at end of stream."""
        while self.received.count(marker) < count:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"stream ended before {marker!r} x{count}")
            self.received += data
        return self.received

    def close(self, *, reset: bool = False) -> None:
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
        self.sock.close()


_LINGER_0 = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")  # struct linger {1, 0}


def http_response(raw: bytes) -> tuple[int, bytes]:
    """Status and body of a complete HTTP/1.1 response as read from a socket (chunked or not)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if headers.get("transfer-encoding", "").lower() != "chunked":
        return status, rest
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return status, body
        assert len(rest) >= size + 2, "the chunked body was cut short"
        body, rest = body + rest[:size], rest[size + 2 :]


# -- a gunicorn worker seen from /proc ---------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    threads: int
    fds: int
    sockets: int
    rss_kb: int
    upstream_connections: int
    client_connections: int

    def as_dict(self) -> dict[str, int]:
        return {
            "threads": self.threads,
            "fds": self.fds,
            "sockets": self.sockets,
            "rss_kb": self.rss_kb,
            "upstream_connections": self.upstream_connections,
            "client_connections": self.client_connections,
        }


_TCP_ESTABLISHED = "01"


def _tcp_table() -> dict[int, tuple[int, int, str]]:
    """inode -> (local port, remote port, state) of every TCP socket in this namespace."""
    table: dict[int, tuple[int, int, str]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(name) as handle:
            next(handle)
            for line in handle:
                cols = line.split()
                local, remote, state, inode = cols[1], cols[2], cols[3], int(cols[9])
                table[inode] = (
                    int(local.rsplit(":", 1)[1], 16),
                    int(remote.rsplit(":", 1)[1], 16),
                    state,
                )
    return table


class ProcessProbe:
    """Threads, descriptors, sockets, RSS and TCP connections of one process (Linux /proc)."""

    def __init__(self, pid: int, *, server_port: int, upstream_port: int) -> None:
        self.pid = pid
        self.server_port = server_port
        self.upstream_port = upstream_port
        self._root = Path(f"/proc/{pid}")

    def socket_inodes(self) -> list[int]:
        inodes = []
        for fd in (self._root / "fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.append(int(target[8:-1]))
        return inodes

    def sample(self) -> ProcSample:
        threads = len(list((self._root / "task").iterdir()))
        fds = len(list((self._root / "fd").iterdir()))
        inodes = self.socket_inodes()
        table = _tcp_table()
        upstream = client = 0
        for inode in inodes:
            entry = table.get(inode)
            if entry is None or entry[2] != _TCP_ESTABLISHED:
                continue
            local_port, remote_port, _ = entry
            if remote_port == self.upstream_port:
                upstream += 1
            elif local_port == self.server_port:
                client += 1
        rss_kb = 0
        for line in (self._root / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
        return ProcSample(threads, fds, len(inodes), rss_kb, upstream, client)


# -- a scripted upstream ------------------------------------------------------------------------


class ScriptedUpstream:
    """A tiny OpenAI-like upstream whose answer is chosen by the request's model name.

    The simulator never echoes the API key and always sends well-behaved text; this one does
    what a hostile or careless upstream might: error messages that quote the caller's key,
    very long messages, key-bearing mid-stream errors and malformed lines, and content chunks
    with any text the test sets in ``content``. HTTP/1.1, one connection per request.
    """

    def __init__(self) -> None:
        self.content: list[str] = ["Hello", " world", "."]
        self.requests: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reads its own output, not ours

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                key = (self.headers.get("Authorization") or "").partition(" ")[2]
                upstream.requests.append(body)
                upstream.answer(self, str(body.get("model", "")), key)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default 5 would make parallel sections wait for SYNs

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="scripted-upstream", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> ScriptedUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The behaviours, by model name.
    def answer(self, handler: BaseHTTPRequestHandler, model: str, key: str) -> None:
        echo = f"Incorrect API key provided: {key}. You can find your API key at example.invalid."
        long_tail = " and more detail" * 400
        if model == "echo-401":
            self._error(handler, 401, echo, "invalid_api_key")
        elif model == "echo-403":
            self._error(handler, 403, f"Key {key} may not use this model.", None)
        elif model == "echo-400":
            self._error(handler, 400, f"Bad request for key {key}", None)
        elif model == "echo-429":
            self._error(handler, 429, f"Rate limit for {key} reached", "rate_limit_exceeded")
        elif model == "echo-500":
            self._error(handler, 500, f"Internal error with {key}:{long_tail}", None)
        elif model == "echo-502-html":
            self._raw(handler, 502, "text/html", f"<html>bad gateway for {key}</html>".encode())
        elif model == "midstream-error":
            self._stream(handler, ["Hi"], tail=_error_line(f"stream broke for {key}{long_tail}"))
        elif model == "malformed-key":
            self._stream(handler, ["Hi"], tail=f'data: {{"broken": "{key}\n\n'.encode())
        elif model == "reset":
            self._stream(handler, ["Hi"], tail=None, reset=True)
        else:
            self._stream(handler, self.content, tail=None)

    @staticmethod
    def _raw(handler: BaseHTTPRequestHandler, status: int, ctype: str, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Retry-After", "0")
        handler.send_header("retry-after-ms", "5")
        handler.end_headers()
        handler.wfile.write(body)

    def _error(
        self, handler: BaseHTTPRequestHandler, status: int, message: str, code: str | None
    ) -> None:
        error = {"message": message, "type": "error", "param": None, "code": code}
        self._raw(handler, status, "application/json", json.dumps({"error": error}).encode())

    @staticmethod
    def _stream(
        handler: BaseHTTPRequestHandler,
        pieces: list[str],
        *,
        tail: bytes | None,
        reset: bool = False,
    ) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")  # the body ends when the socket closes
        handler.end_headers()
        out = handler.wfile
        for piece in pieces:
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            out.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        out.flush()
        if reset:  # RST, not FIN: close now, before the server's own shutdown(SHUT_WR)
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
            handler.connection.close()
            handler.close_connection = True
            return
        if tail is not None:
            out.write(tail)
        else:
            stop = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            out.write(b"data: " + json.dumps(stop).encode() + b"\n\ndata: [DONE]\n\n")
        out.flush()
        handler.close_connection = True


def _error_line(message: str) -> bytes:
    error = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return b"data: " + json.dumps(error).encode() + b"\n\n"
