"""The floor for CPU per paced chunk: one thread, one HTTP/2 connection, the ``h2`` library.

What any client of a paced HTTP/2 upstream must at least do per chunk, and nothing more: read
the socket, let ``h2`` parse the frames and hand the window back, split the SSE lines, parse
each ``data:`` JSON with ``json.loads``, and build the frame the service sends on (the engine's
own ``encode_event`` of a ``ContentChunk``, so both pay the same encoding). No threads, no
queues, no SDK: the engine's CPU per chunk divided by this one's, measured in the same run
against the same upstream, is what its threads, hand-offs and the SDK's request path cost.

Requests are the bodies the engine sends for the same sections (model, messages, ``stream``,
``stream_options.include_usage``, ``max_tokens``, the ``sim`` controls), all written before the
first read, as a fan-out of K runs of N sections would.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events

from peers.base import Section

__all__ = ["FloorResult", "read_streams"]


@dataclass
class FloorResult:
    chunks: int
    frames_bytes: int
    streams_ended: int


def read_streams(base_url: str, runs: Sequence[Sequence[Section]]) -> FloorResult:
    """Stream every section of every run over one h2c connection, in this thread."""
    from backend_ai.streaming.events import ContentChunk
    from backend_ai.streaming.sse import encode_event

    url = urlsplit(base_url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    path = (url.path.rstrip("/") + "/chat/completions").encode()
    authority = f"{url.hostname}:{url.port}".encode()
    names: dict[int, str] = {}
    for sections in runs:
        for section in sections:
            body = json.dumps(
                {
                    "model": section.model,
                    "messages": section.messages(),
                    "stream": True,
                    "stream_options": {"include_usage": True},
                    "max_tokens": section.max_tokens,
                    "temperature": 0.7,
                    "sim": dict(section.sim),
                }
            ).encode()
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(
                stream_id,
                [
                    (b":method", b"POST"),
                    (b":scheme", b"http"),
                    (b":authority", authority),
                    (b":path", path),
                    (b"content-type", b"application/json"),
                    (b"accept", b"text/event-stream"),
                    (b"content-length", str(len(body)).encode()),
                ],
            )
            conn.send_data(stream_id, body, end_stream=True)
            names[stream_id] = section.name
    sock.sendall(conn.data_to_send())
    pending: dict[int, bytes] = dict.fromkeys(names, b"")
    seqs: dict[int, int] = dict.fromkeys(names, 0)
    open_streams = len(names)
    chunks = frame_bytes = 0
    loads = json.loads
    with sock:
        while open_streams:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the upstream closed the connection")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    stream_id = event.stream_id
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                    buffer = pending[stream_id] + (event.data or b"")
                    *lines, pending[stream_id] = buffer.split(b"\n")
                    for line in lines:
                        if not line.startswith(b"data: ") or line == b"data: [DONE]":
                            continue
                        obj = loads(line[6:])
                        for choice in obj.get("choices") or ():
                            content = (choice.get("delta") or {}).get("content")
                            if content:
                                frame = encode_event(
                                    ContentChunk(names[stream_id], seqs[stream_id], content)
                                )
                                seqs[stream_id] += 1
                                frame_bytes += len(frame)
                                chunks += 1
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    open_streams -= 1
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        conn.close_connection()
        sock.sendall(conn.data_to_send())
    return FloorResult(chunks=chunks, frames_bytes=frame_bytes, streams_ended=len(names))
