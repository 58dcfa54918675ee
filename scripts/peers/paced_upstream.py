#!/usr/bin/env python
"""A lean upstream that streams completions at a model's pace, for measuring the client's CPU.

The simulator (hypercorn + an asyncio task per stream) spends more CPU per chunk than the
engine it serves — 434 µs against the server's 342 µs in a 20-client load test on two cores — so
on this machine a paced measurement against it mostly measures the simulator. This server does
the least a paced upstream can: one thread, one ``selectors`` loop over every connection, a
timer heap with one entry per open stream (its next chunk's due time, on an absolute schedule
with the simulator's seeded jitter), and chunks pre-encoded once per (model, seed, length) with
the simulator's own wire format (``backend_ai.simulator.wire``), so sending a chunk is a
``send_data`` and, per loop turn, one socket write per connection. It speaks h2c (prior
knowledge, ``h2``'s public API) and HTTP/1.1 (chunked), keep-alive on both.

Controls, as the simulator reads them: server defaults (``--ttft-ms``, ``--itl-ms``,
``--tokens``, ``--jitter``), then the ``X-Sim`` request header, then the body's ``sim`` object
(``ttft_ms``, ``itl_ms``, ``tokens``, ``jitter``, ``seed``; others are ignored).
``GET /stats`` (HTTP/1.1) answers the chunks sent and how late they went out against their
schedule (``chunk_lateness``, the simulator's key), ``POST /reset`` clears those figures.
``--cpu N`` pins the process to core N (``os.sched_setaffinity``).

    with PacedUpstream(ttft_ms=50, itl_ms=25) as upstream:   # upstream.base_url, upstream.pid
        ...
    python scripts/peers/paced_upstream.py --port 8030 --itl-ms 25
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import random
import selectors
import socket
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import h2.config
import h2.connection
import h2.events
import h2.exceptions

# The percentile is shared with the tests and the other scripts (``tests/support``); the child
# process plumbing with the burst upstream (``scripts/`` on the path, for ``peers``).
_HERE = Path(__file__).resolve()
sys.path[:0] = [p for p in (str(_HERE.parents[2]), str(_HERE.parents[1])) if p not in sys.path]
from peers.upstream_child import UpstreamChild, serve_as_child  # noqa: E402
from tests.support.stats import percentile  # noqa: E402

__all__ = ["PacedUpstream", "main"]

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_CONTROL_KEYS = ("ttft_ms", "itl_ms", "tokens", "jitter", "seed")
#: Lateness samples kept for ``/stats`` (enough for percentiles; memory stays bounded).
_MAX_SAMPLES = 200_000


class _Parts:
    """The pre-encoded SSE bytes of one completion: role + first token, tokens, and the tail."""

    _cache: ClassVar[dict[tuple[str, bool, int, int], list[bytes]]] = {}

    @classmethod
    def get(cls, model: str, include_usage: bool, seed: int, count: int) -> list[bytes]:
        key = (model, include_usage, seed, count)
        parts = cls._cache.get(key)
        if parts is None:
            from backend_ai.simulator import wire
            from backend_ai.simulator.text import completion_tokens

            encoder = wire.ChunkEncoder(
                completion_id="chatcmpl-paced",
                created=1_700_000_000,
                model=model,
                include_usage=include_usage,
            )
            tokens = [encoder.content(t) for t in completion_tokens(seed, max(1, count))]
            tail = encoder.finish("stop")
            if include_usage:
                tail += encoder.usage(8, count)
            tail += wire.DONE
            tokens[0] = encoder.role() + tokens[0]
            tokens[-1] += tail
            parts = cls._cache[key] = tokens
        return parts


class _Stream:
    """One response being paced out; ``send(data, last)`` writes through its connection."""

    __slots__ = ("clock", "index", "itl_ms", "parts", "send")

    def __init__(
        self,
        parts: list[bytes],
        itl_ms: float,
        jitter: float,
        seed: int,
        send: Callable[[bytes, bool], None],
    ) -> None:
        self.parts = parts
        self.index = 0
        self.itl_ms = itl_ms
        rng = random.Random(seed ^ 0x5EED_5EED)
        self.clock = (lambda ms: ms * (1 + jitter * rng.uniform(-1, 1))) if jitter else None
        self.send = send

    def delay_s(self, ms: float) -> float:
        return (self.clock(ms) if self.clock else ms) / 1000


class _Server:
    def __init__(self, defaults: Mapping[str, float]) -> None:
        self.defaults = dict(defaults)
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, _Stream]] = []
        self._seq = 0
        self.dirty: set[_Conn] = set()
        self.lateness_ms: list[float] = []
        self.chunks_sent = 0
        self.streams_started = 0

    def controls(self, header: str | None, body: Mapping[str, Any]) -> dict[str, float]:
        merged = dict(self.defaults)
        if header:
            with contextlib.suppress(ValueError, TypeError):
                merged.update({k: v for k, v in json.loads(header).items() if k in _CONTROL_KEYS})
        sim = body.get("sim")
        if isinstance(sim, dict):
            merged.update({k: v for k, v in sim.items() if k in _CONTROL_KEYS})
        return merged

    def start_stream(
        self,
        body: Mapping[str, Any],
        header: str | None,
        send: Callable[[bytes, bool], None],
    ) -> _Stream:
        c = self.controls(header, body)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        parts = _Parts.get(
            str(body.get("model", "sim-model")), include_usage, int(c["seed"]), int(c["tokens"])
        )
        stream = _Stream(parts, float(c["itl_ms"]), float(c["jitter"]), int(c["seed"]), send)
        self.streams_started += 1
        self.schedule(time.monotonic() + stream.delay_s(float(c["ttft_ms"])), stream)
        return stream

    def schedule(self, due: float, stream: _Stream) -> None:
        self._seq += 1
        heapq.heappush(self.timers, (due, self._seq, stream))

    def fire_due(self) -> None:
        now = time.monotonic()
        timers = self.timers
        while timers and timers[0][0] <= now:
            due, _, stream = heapq.heappop(timers)
            if stream.send is _cancelled:
                continue
            last = stream.index == len(stream.parts) - 1
            stream.send(stream.parts[stream.index], last)
            self.chunks_sent += 1
            if len(self.lateness_ms) < _MAX_SAMPLES:
                self.lateness_ms.append((now - due) * 1000)
            if not last:
                stream.index += 1
                self.schedule(due + stream.delay_s(stream.itl_ms), stream)

    def stats(self) -> dict[str, Any]:
        late = sorted(self.lateness_ms)

        def pct(q: float) -> float | None:
            value = percentile(late, q)
            return None if value is None else round(value, 2)

        return {
            "chunks_sent": self.chunks_sent,
            "streams_started": self.streams_started,
            "chunk_lateness": {
                "p50_ms": pct(0.5),
                "p99_ms": pct(0.99),
                "mean_ms": round(statistics.fmean(late), 2) if late else None,
            },
        }

    def reset(self) -> None:
        self.lateness_ms.clear()
        self.chunks_sent = 0
        self.streams_started = 0

    def run(self, listener: socket.socket) -> None:
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, None)
        while True:
            timeout = max(0.0, self.timers[0][0] - time.monotonic()) if self.timers else None
            for key, _mask in self.selector.select(timeout):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        sock, _ = listener.accept()
                        _Conn(self, sock)
                else:
                    key.data.on_readable()
            self.fire_due()
            for conn in list(self.dirty):
                conn.flush()
            self.dirty.clear()


def _cancelled(data: bytes, last: bool) -> None:  # the send of a stream the client reset
    del data, last


class _Conn:
    """One client connection: protocol sniffed from its first bytes."""

    def __init__(self, server: _Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inbuf = b""
        self.outbuf = bytearray()
        self.h2: h2.connection.H2Connection | None = None
        self.protocol: str | None = None
        self.streams: dict[int, _Stream] = {}
        self.bodies: dict[int, bytearray] = {}
        self.headers: dict[int, dict[bytes, bytes]] = {}
        self.blocked: dict[int, list[tuple[bytes, bool]]] = {}
        self.h1_busy = False
        server.selector.register(sock, selectors.EVENT_READ, self)

    def close(self) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.server.selector.unregister(self.sock)
        for stream in self.streams.values():
            stream.send = _cancelled
        self.streams.clear()
        self.server.dirty.discard(self)
        self.sock.close()

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        if self.protocol is None:
            self.inbuf += data
            if len(self.inbuf) < len(_H2_PREFACE) and _H2_PREFACE.startswith(self.inbuf):
                return
            self.protocol = "h2" if self.inbuf.startswith(_H2_PREFACE) else "h1"
            data, self.inbuf = self.inbuf, b""
            if self.protocol == "h2":
                self.h2 = h2.connection.H2Connection(
                    h2.config.H2Configuration(client_side=False, header_encoding=None)
                )
                self.h2.local_settings.max_concurrent_streams = 1000
                self.h2.initiate_connection()
        if self.protocol == "h2":
            self._h2_received(data)
        else:
            self.inbuf += data
            self._h1_received()
        self.flush()

    # -- HTTP/2 --------------------------------------------------------------------------------
    def _h2_received(self, data: bytes) -> None:
        assert self.h2 is not None
        conn = self.h2
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.outbuf += conn.data_to_send()
            self.flush()
            self.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.headers[event.stream_id] = dict(event.headers or ())
                self.bodies[event.stream_id] = bytearray()
            elif isinstance(event, h2.events.DataReceived):
                self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data or b"")
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._h2_request(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    stream.send = _cancelled
                self.blocked.pop(event.stream_id, None)
            elif isinstance(event, h2.events.WindowUpdated):
                self._h2_unblock()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.outbuf += conn.data_to_send()
                self.flush()
                self.close()
                return
        self.outbuf += conn.data_to_send()

    def _h2_request(self, stream_id: int) -> None:
        assert self.h2 is not None
        headers = self.headers.pop(stream_id, {})
        raw = bytes(self.bodies.pop(stream_id, b""))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        self.h2.send_headers(
            stream_id, [(b":status", b"200"), (b"content-type", b"text/event-stream")]
        )

        def send(data: bytes, last: bool) -> None:
            self._h2_send(stream_id, data, last)

        header = headers.get(b"x-sim")
        self.streams[stream_id] = self.server.start_stream(
            body if isinstance(body, dict) else {}, header.decode() if header else None, send
        )

    def _h2_send(self, stream_id: int, data: bytes, last: bool) -> None:
        assert self.h2 is not None
        if stream_id in self.blocked:
            self.blocked[stream_id].append((data, last))
            return
        if not self._h2_try_send(stream_id, data, last):
            self.blocked[stream_id] = [(data, last)]
        self.server.dirty.add(self)

    def _h2_try_send(self, stream_id: int, data: bytes, last: bool) -> bool:
        assert self.h2 is not None
        conn = self.h2
        try:
            if conn.local_flow_control_window(stream_id) < len(data):
                return False
            conn.send_data(stream_id, data, end_stream=last)
        except h2.exceptions.StreamClosedError:
            return True
        if last:
            self.streams.pop(stream_id, None)
        return True

    def _h2_unblock(self) -> None:
        for stream_id in list(self.blocked):
            queue = self.blocked[stream_id]
            while queue and self._h2_try_send(stream_id, *queue[0]):
                queue.pop(0)
            if not queue:
                del self.blocked[stream_id]
        self.server.dirty.add(self)

    # -- HTTP/1.1 ------------------------------------------------------------------------------
    def _h1_received(self) -> None:
        while not self.h1_busy and b"\r\n\r\n" in self.inbuf:
            head, _, rest = self.inbuf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, path = [*lines[0].split(b" "), b"", b""][:2]
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                fields[name.strip().lower()] = value.strip()
            length = int(fields.get(b"content-length", b"0") or 0)
            if len(rest) < length:
                return
            raw, self.inbuf = rest[:length], rest[length:]
            if path.endswith(b"/stats") and method == b"GET":
                self._h1_json(self.server.stats())
            elif path.endswith(b"/reset") and method == b"POST":
                self.server.reset()
                self._h1_json({"ok": True})
            else:
                self._h1_stream(raw, fields.get(b"x-sim"))

    def _h1_json(self, obj: Any) -> None:
        payload = json.dumps(obj).encode()
        self.outbuf += (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )

    def _h1_stream(self, raw: bytes, header: bytes | None) -> None:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        self.outbuf += (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        self.h1_busy = True

        def send(data: bytes, last: bool) -> None:
            self.outbuf += b"%x\r\n%s\r\n" % (len(data), data)
            if last:
                self.outbuf += b"0\r\n\r\n"
                self.h1_busy = False
                self.streams.pop(0, None)
                self._h1_received()  # a request that arrived while this one streamed
            self.server.dirty.add(self)

        self.streams[0] = self.server.start_stream(
            body if isinstance(body, dict) else {}, header.decode() if header else None, send
        )

    # -- writing -------------------------------------------------------------------------------
    def flush(self) -> None:
        if self.h2 is not None:
            self.outbuf += self.h2.data_to_send()
        if not self.outbuf:
            return
        try:
            sent = self.sock.send(self.outbuf)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        del self.outbuf[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0)
        with contextlib.suppress(KeyError, ValueError):
            self.server.selector.modify(self.sock, events, self)


def serve(port: int, defaults: Mapping[str, float], on_ready: Callable[[int], None]) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    _Parts.get("warm-up", True, 1, 1)  # imports the wire format before the first request
    on_ready(listener.getsockname()[1])
    _Server(defaults).run(listener)


class PacedUpstream(UpstreamChild):
    """The server as a child process (its CPU is not the measured process's)."""

    def __init__(
        self,
        *,
        ttft_ms: float = 50.0,
        itl_ms: float = 25.0,
        tokens: int = 60,
        jitter: float = 0.2,
        cpu: int | None = None,
    ) -> None:
        args = [f"--ttft-ms={ttft_ms}", f"--itl-ms={itl_ms}", f"--tokens={tokens}"]
        args += [f"--jitter={jitter}"] + ([f"--cpu={cpu}"] if cpu is not None else [])
        super().__init__(Path(__file__).resolve(), args)

    def _control(self, method: str, path: str) -> Any:
        import httpx

        response = httpx.request(method, f"http://127.0.0.1:{self.port}{path}", timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self, *, records: bool = False) -> dict[str, Any]:
        """Chunks sent and their lateness against the schedule (``records`` is ignored)."""
        del records
        return dict(self._control("GET", "/stats"))

    def reset(self) -> None:
        self._control("POST", "/reset")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8030)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--itl-ms", type=float, default=25.0)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--jitter", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cpu", type=int, help="pin this process to one core")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    defaults = {
        "ttft_ms": args.ttft_ms,
        "itl_ms": args.itl_ms,
        "tokens": args.tokens,
        "jitter": args.jitter,
        "seed": args.seed,
    }
    return serve_as_child(lambda announce: serve(args.port, defaults, announce))


if __name__ == "__main__":
    sys.exit(main())
