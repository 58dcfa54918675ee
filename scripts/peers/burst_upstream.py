#!/usr/bin/env python
"""An upstream that sends a whole streamed completion at once, for measuring CPU per chunk.

The simulator paces its tokens (and, at ``itl_ms=0``, yields to its event loop between them), so
a client that parses faster than the simulator writes is woken for every few chunks, and what
it measures is mostly wake-ups — more so when the machine is busy. This server removes the
upstream from the measurement: it pre-renders the response (the simulator's exact chunk bytes,
from ``backend_ai.simulator.wire``) and writes it in as few socket writes as the protocol
allows — one for HTTP/1.1, one per flow-control window for HTTP/2 (cleartext, prior
knowledge). Its own CPU per chunk is a memcpy, and it runs in its own process.

Requests: ``POST .../chat/completions`` with the chat-completions JSON; ``sim.tokens`` sets the
number of content chunks (default 100), ``stream_options.include_usage`` adds the usage chunk.
A body with ``input`` and no ``messages`` (``POST .../responses``) is answered with the
Responses API's events instead, with the same tokens.
Anything else is answered as a stream too: this is a measuring device, not a simulator.

    with BurstUpstream() as upstream:        # upstream.base_url -> "http://127.0.0.1:PORT/v1"
        ...
    python scripts/peers/burst_upstream.py --port 8020
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The child process plumbing is shared with the paced upstream (``scripts/`` on the path).
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers.upstream_child import UpstreamChild, serve_as_child

__all__ = ["BurstUpstream", "render_stream"]

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def render_stream(body: dict[str, Any]) -> bytes:
    """The SSE body of one streamed completion, as the simulator would send it."""
    from backend_ai.simulator import wire
    from backend_ai.simulator.text import completion_tokens

    sim = body.get("sim") or {}
    count = int(sim.get("tokens", 100))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    tokens = completion_tokens(int(sim.get("seed", 1)), count)
    if "input" in body and "messages" not in body:
        responses = wire.ResponsesEncoder(
            response_id="resp_burst", created=1_700_000_000, model=str(body.get("model", "m"))
        )
        content = b"".join(responses.content(token) for token in tokens)
        return responses.opening() + content + responses.end("stop", 8, count)
    encoder = wire.ChunkEncoder(
        completion_id="chatcmpl-burst",
        created=1_700_000_000,
        model=str(body.get("model", "sim-model")),
        include_usage=include_usage,
    )
    parts = [encoder.role()]
    parts.extend(encoder.content(token) for token in tokens)
    parts.append(encoder.finish("stop"))
    if include_usage:
        parts.append(encoder.usage(8, count))
    parts.append(wire.DONE)
    return b"".join(parts)


# -- HTTP/1.1 -----------------------------------------------------------------------------------
def _serve_http1(sock: socket.socket, buffer: bytes) -> None:
    while True:
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            if not data:
                return
            buffer += data
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(buffer) < length:
            data = sock.recv(65536)
            if not data:
                return
            buffer += data
        raw, buffer = buffer[:length], buffer[length:]
        payload = render_stream(json.loads(raw or b"{}"))
        sock.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            + f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )


# -- HTTP/2 (prior knowledge) ---------------------------------------------------------------------
def _serve_http2(sock: socket.socket, buffer: bytes) -> None:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    conn.initiate_connection()
    bodies: dict[int, bytes] = {}
    pending: dict[int, memoryview] = {}

    def flush() -> None:
        for stream_id in list(pending):
            view = pending[stream_id]
            try:
                while view:
                    room = min(
                        conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size
                    )
                    if room <= 0:
                        break
                    conn.send_data(stream_id, bytes(view[:room]))
                    view = view[room:]
                if view:
                    pending[stream_id] = view
                else:
                    conn.end_stream(stream_id)
                    del pending[stream_id]
            except h2.exceptions.StreamClosedError:
                pending.pop(stream_id, None)

    data = buffer
    while True:
        if data:
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    raw = bodies.pop(event.stream_id, b"")
                    conn.send_headers(
                        event.stream_id,
                        [(b":status", b"200"), (b"content-type", b"text/event-stream")],
                    )
                    pending[event.stream_id] = memoryview(render_stream(json.loads(raw or b"{}")))
                elif isinstance(event, h2.events.StreamReset):
                    pending.pop(event.stream_id, None)
                    bodies.pop(event.stream_id, None)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    sock.sendall(conn.data_to_send())
                    return
            flush()
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
        data = sock.recv(65536)
        if not data:
            return


def _handle(sock: socket.socket) -> None:
    with contextlib.closing(sock), contextlib.suppress(OSError, ValueError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        while len(buffer) < len(_H2_PREFACE):
            data = sock.recv(65536)
            if not data:
                return
            buffer += data
            if not _H2_PREFACE.startswith(buffer[: len(_H2_PREFACE)]):
                break
        if buffer.startswith(_H2_PREFACE):
            _serve_http2(sock, buffer)
        else:
            _serve_http1(sock, buffer)


def serve(port: int, on_ready: Callable[[int], None]) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=256)
    on_ready(listener.getsockname()[1])
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_handle, args=(client,), daemon=True).start()


class BurstUpstream(UpstreamChild):
    """The server as a child process (its CPU is not the measured process's)."""

    def __init__(self) -> None:
        super().__init__(Path(__file__).resolve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8020)
    args = parser.parse_args(argv)
    return serve_as_child(lambda announce: serve(args.port, announce))


if __name__ == "__main__":
    sys.exit(main())
