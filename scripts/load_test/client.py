"""The load test's client: virtual users on raw asyncio sockets, every stream checked.

Each virtual user holds one HTTP/1.1 connection (kept alive between its requests unless told
otherwise), POSTs the route's JSON payload and reads the SSE stream to its end, timing the
first response byte, the first event, the first content chunk and the end. The client is a
small HTTP/1.1 + SSE reader on raw sockets, no HTTP library on the hot path, so that it is not
the bottleneck; ``run_load`` reports its own CPU time with the results. For the same reason it
splits frames on bytes itself rather than through ``tests/support/sse.py``'s text reader, which
asserts the framing line by line.

``StreamChecker`` feeds every event to the stream-protocol checker the tests use
(``tests/support/protocol.py``) and copies its counts into the request's ``Result``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tests.support.protocol import ProtocolChecker
from tests.support.stats import percentile

__all__ = ["ROUTES", "Connection", "Result", "StreamChecker", "Totals", "run_load"]

#: The routes a load test can drive: path and the JSON payload posted to it.
ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "dream": (
        "/dream/interpret-stream",
        {"dream": "I walked through a lighthouse full of clocks that all ticked backwards."},
    ),
    "iching": ("/iching/reading-stream", {"question": "Should I take the new job abroad?"}),
    "tarot": ("/tarot/three-card-stream", {"question": "What should I focus on this month?"}),
    "compare": (
        "/compare/stream",
        {
            "prompt": "Explain backpressure in one paragraph.",
            "models": ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"],
        },
    ),
}


@dataclass
class Result:
    """One request, as the client saw it; times are seconds from the request's start."""

    #: Wall-clock time (``time.time()``) of the request's start, to set beside the upstream's
    #: own records.
    started_at: float = 0.0
    status: int | None = None
    connect_s: float | None = None
    first_byte_s: float | None = None
    first_event_s: float | None = None
    first_chunk_s: float | None = None
    total_s: float | None = None
    chunks: int = 0
    lost: int = 0
    duplicates: int = 0
    done: bool = False
    events_after_done: int = 0
    violations: int = 0  # protocol problems of any kind (tests/support/protocol.py)
    section_errors: Counter[str] = field(default_factory=Counter)
    error: str | None = None  # transport or HTTP failure; None when the stream was read

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.done
            and not self.lost
            and not self.duplicates
            and not self.events_after_done
            and not self.violations
        )


class StreamChecker:
    """Follows one SSE stream's events: the shared protocol checker, plus the client's timings."""

    __slots__ = ("clock", "protocol", "result", "t0")

    def __init__(self, result: Result, t0: float) -> None:
        self.result = result
        self.t0 = t0
        self.protocol = ProtocolChecker()
        self.clock = time.perf_counter

    def event(self, obj: dict[str, Any]) -> None:
        r = self.result
        if r.first_event_s is None:
            r.first_event_s = self.clock() - self.t0
        kind = obj.get("type")
        if kind == "chunk" and r.first_chunk_s is None:
            r.first_chunk_s = self.clock() - self.t0
        protocol = self.protocol
        protocol.feed(obj)
        if kind == "error":
            r.section_errors[str(obj.get("code"))] += 1
        # Copied on every event, so a stream cut short by a timeout still counts what it got.
        r.done = protocol.done
        r.chunks = protocol.chunks
        r.lost = protocol.lost
        r.duplicates = protocol.duplicated
        r.events_after_done = protocol.events_after_done
        r.violations = len(protocol.problems)

    def finish(self) -> None:
        """The whole-stream checks, once the body has ended with ``done``."""
        if self.protocol.done:
            self.protocol.finish()
            self.result.violations = len(self.protocol.problems)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the end
                    pass
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining > 0:
            data = await reader.read(min(remaining, 65536))
            if not data:
                raise ConnectionError("body ended before its content-length")
            remaining -= len(data)
            yield data
    else:
        while data := await reader.read(65536):
            yield data


class Connection:
    """One keep-alive HTTP/1.1 connection of a virtual user."""

    def __init__(self, host: str, port: int, keepalive: bool) -> None:
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, path: str, body: bytes, timeout: float) -> Result:
        result = Result(started_at=time.time())
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(self._request(path, body, result, t0), timeout)
        except TimeoutError:
            result.error = "timeout"
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            result.error = f"connection:{type(exc).__name__}"
        except (ValueError, KeyError) as exc:
            result.error = f"protocol:{type(exc).__name__}"
        if result.error is not None or not self.keepalive:
            await self.close()
        result.total_s = time.perf_counter() - t0
        return result

    async def _request(self, path: str, body: bytes, result: Result, t0: float) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
            result.connect_s = time.perf_counter() - t0
        reader, writer = self.reader, self.writer
        assert reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if self.keepalive else 'close'}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        status_line = await reader.readuntil(b"\r\n")
        result.first_byte_s = time.perf_counter() - t0
        result.status = int(status_line.split(b" ", 2)[1])
        raw_headers = await reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in raw_headers.decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("connection", "").lower() == "close":
            self.keepalive = False
        if result.status != 200:
            detail = b""
            async for data in _read_body(reader, headers):
                detail += data
            code = ""
            with contextlib.suppress(ValueError, AttributeError):
                code = ":" + str(json.loads(detail).get("error", {}).get("code", ""))
            result.error = f"http_{result.status}{code}"
            return
        checker = StreamChecker(result, t0)
        event = checker.event
        loads = json.loads
        buffer = b""
        async for data in _read_body(reader, headers):
            buffer = buffer + data if buffer else data
            while True:
                end = buffer.find(b"\n\n")
                if end < 0:
                    break
                frame, buffer = buffer[:end], buffer[end + 2 :]
                for line in frame.split(b"\n"):
                    if line.startswith(b"data:"):
                        event(loads(line[5:]))
        checker.finish()
        if not result.done:
            result.error = "missing_done"


# -- the run -----------------------------------------------------------------------------------
@dataclass
class Totals:
    results: list[Result] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    active: int = 0

    def add(self, result: Result) -> None:
        self.results.append(result)


def _progress(totals: Totals, target: str, final: bool = False) -> None:
    elapsed = time.perf_counter() - totals.started
    results = totals.results
    failed = sum(1 for r in results if not r.ok)
    firsts = [r.first_chunk_s for r in results[-200:] if r.first_chunk_s is not None]
    p50 = percentile(firsts, 0.5)
    line = (
        f"[{elapsed:6.1f}s] {len(results)}{target} done, {totals.active} active, "
        f"{len(results) / elapsed if elapsed else 0:6.1f} req/s, {failed} failed, "
        f"first chunk p50 {p50 * 1000 if p50 is not None else 0:6.0f} ms"
    )
    if sys.stderr.isatty():
        sys.stderr.write("\r" + line + ("\n" if final else ""))
    else:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


async def run_load(
    url: str,
    path: str,
    payload: dict[str, Any],
    *,
    concurrent: int,
    requests: int | None,
    duration: float | None,
    timeout: float,
    keepalive: bool = True,
    ramp_s: float = 0.0,
    progress: bool = True,
) -> tuple[Totals, float, float]:
    """Run the load; returns the results, the wall time and this process's CPU seconds.

    Client ``i`` of ``concurrent`` starts ``i * ramp_s / concurrent`` seconds in. Without a
    ramp every client starts at once, and with requests of equal length they stay in step:
    each wave then sets up every client's request at the same moment.
    """
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 80
    prefix = parsed.path.rstrip("/")
    body = json.dumps(payload).encode()
    totals = Totals()
    issued = 0
    deadline = None if duration is None else time.perf_counter() + duration

    def take() -> bool:
        nonlocal issued
        if requests is not None and issued >= requests:
            return False
        if deadline is not None and time.perf_counter() >= deadline:
            return False
        issued += 1
        return True

    async def user(index: int) -> None:
        if ramp_s:
            await asyncio.sleep(index * ramp_s / concurrent)
        connection = Connection(host, port, keepalive)
        try:
            while take():
                totals.active += 1
                try:
                    result = await connection.request(prefix + path, body, timeout)
                finally:
                    totals.active -= 1
                totals.add(result)
        finally:
            await connection.close()

    target = f"/{requests}" if requests is not None else ""

    async def reporter() -> None:
        interval = 0.5 if sys.stderr.isatty() else 5.0
        while True:
            await asyncio.sleep(interval)
            _progress(totals, target)

    cpu0 = time.process_time()
    totals.started = time.perf_counter()
    report = asyncio.create_task(reporter()) if progress else None
    await asyncio.gather(*(user(i) for i in range(concurrent)))
    wall = time.perf_counter() - totals.started
    if report is not None:
        report.cancel()
        _progress(totals, target, final=True)
    return totals, wall, time.process_time() - cpu0
