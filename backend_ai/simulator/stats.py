"""What the simulator saw, for tests to assert on: connections, streams, disconnects.

Everything lives in the server's single event loop, so plain counters need no locks. Only
``/v1`` traffic is counted; the control endpoints (``/_sim/...``) never show up here, so a test
can poll the stats without disturbing them.

Stream accounting holds ``streams_started == streams_active + streams_completed +
streams_faulted + (disconnects with stream_started)`` at every snapshot.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_REQUEST_RECORDS",
    "ConnectionRecord",
    "LatenessHistogram",
    "RequestRecord",
    "SimStats",
]

MAX_REQUEST_RECORDS = 10_000
"""Per-request records kept (oldest dropped first) so a long load test cannot exhaust memory."""


class LatenessHistogram:
    """How late the simulator sent chunks against its own schedule: its timing accuracy.

    A benchmark reads this to prove it measured the client, not an overloaded simulator.
    Fixed buckets keep the cost per chunk constant; percentiles are reported as the upper edge
    of their bucket (capped at the exact maximum), so they are upper bounds.
    """

    EDGES_MS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.EDGES_MS) + 1)
        self.total_ms = 0.0
        self.max_ms = 0.0

    def add(self, late_s: float) -> None:
        late_ms = max(0.0, late_s * 1000.0)
        self.total_ms += late_ms
        self.max_ms = max(self.max_ms, late_ms)
        self.counts[bisect.bisect_left(self.EDGES_MS, late_ms)] += 1

    def _percentile(self, q: float, samples: int) -> float:
        rank = q * samples
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                edge = self.EDGES_MS[index] if index < len(self.EDGES_MS) else self.max_ms
                return min(float(edge), self.max_ms)
        return 0.0

    def as_dict(self) -> dict[str, float]:
        samples = sum(self.counts)
        return {
            "samples": samples,
            "mean_ms": self.total_ms / samples if samples else 0.0,
            "p50_ms": self._percentile(0.50, samples),
            "p99_ms": self._percentile(0.99, samples),
            "max_ms": self.max_ms,
        }


@dataclass
class ConnectionRecord:
    id: int
    http_version: str
    requests: int = 0
    active: int = 0
    max_active: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "http_version": self.http_version,
            "requests": self.requests,
            "max_active": self.max_active,
        }


@dataclass
class RequestRecord:
    """One ``/v1`` request from arrival to its end; times are ``time.time()`` floats."""

    request_id: str
    connection_id: int
    http_version: str
    method: str
    path: str
    t_start: float
    tag: str | None = None
    model: str | None = None
    stream: bool = False
    status: int | None = None
    t_headers: float | None = None
    t_first_token: float | None = None
    t_end: float | None = None
    chunks_sent: int = 0
    outcome: str = "active"
    #: What the request counted against the budget's tokens per window (None: no such budget).
    rate_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "connection_id": self.connection_id,
            "http_version": self.http_version,
            "method": self.method,
            "path": self.path,
            "tag": self.tag,
            "model": self.model,
            "stream": self.stream,
            "status": self.status,
            "t_start": self.t_start,
            "t_headers": self.t_headers,
            "t_first_token": self.t_first_token,
            "t_end": self.t_end,
            "chunks_sent": self.chunks_sent,
            "outcome": self.outcome,
            "rate_tokens": self.rate_tokens,
        }


class SimStats:
    """Counters since start-up or the last :meth:`reset`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._connection_ids: dict[Hashable, ConnectionRecord] = {}
        self._next_connection_id = 1
        self.requests_total = 0
        self.status_counts: Counter[int] = Counter()
        self.streams_started = 0
        self.streams_active = 0
        self.streams_active_max = 0
        self.streams_completed = 0
        self.streams_faulted = 0
        self.chunks_sent = 0
        self.lateness = LatenessHistogram()
        self.disconnects: list[dict[str, Any]] = []
        self.records: deque[RequestRecord] = deque(maxlen=MAX_REQUEST_RECORDS)
        self.reset_at = time.time()
        # Requests in flight across a reset finish against the old epoch and are not counted.
        self._epoch = object()

    # -- requests ------------------------------------------------------------------------------
    def request_started(
        self, *, connection_key: Hashable, http_version: str, record_fields: dict[str, Any]
    ) -> RequestRecord:
        connection = self._connection_ids.get(connection_key)
        if connection is None:
            connection = ConnectionRecord(id=self._next_connection_id, http_version=http_version)
            self._next_connection_id += 1
            self._connection_ids[connection_key] = connection
        connection.requests += 1
        connection.active += 1
        connection.max_active = max(connection.max_active, connection.active)
        self.requests_total += 1
        record = RequestRecord(
            connection_id=connection.id,
            http_version=http_version,
            t_start=time.time(),
            **record_fields,
        )
        record.extra["connection"] = connection
        record.extra["epoch"] = self._epoch
        self.records.append(record)
        return record

    def request_finished(self, record: RequestRecord, outcome: str) -> None:
        """Close a request's record; ``outcome`` is completed/faulted/disconnected/error."""
        record.t_end = time.time()
        record.outcome = outcome
        connection: ConnectionRecord = record.extra.pop("connection")
        connection.active -= 1
        if record.extra.get("epoch") is not self._epoch:
            return
        if record.status is not None:
            self.status_counts[record.status] += 1
        if outcome == "disconnected":
            self.disconnects.append(
                {
                    "t": record.t_end,
                    "request_id": record.request_id,
                    "tag": record.tag,
                    "chunks_sent": record.chunks_sent,
                    "http_version": record.http_version,
                    "stream": record.stream,
                    "stream_started": bool(record.extra.get("stream_open")),
                }
            )
        if record.stream and record.extra.pop("stream_open", False):
            self.streams_active -= 1
            if outcome == "completed":
                self.streams_completed += 1
            elif outcome == "faulted":
                self.streams_faulted += 1

    # -- streams -------------------------------------------------------------------------------
    def stream_started(self, record: RequestRecord) -> None:
        if record.extra.get("epoch") is not self._epoch:
            return
        record.extra["stream_open"] = True
        self.streams_started += 1
        self.streams_active += 1
        self.streams_active_max = max(self.streams_active_max, self.streams_active)

    def chunk_sent(self, record: RequestRecord, late_s: float) -> None:
        """A content chunk went out ``late_s`` seconds after its scheduled time."""
        if record.chunks_sent == 0:
            record.t_first_token = time.time()
        record.chunks_sent += 1
        if record.extra.get("epoch") is self._epoch:
            self.chunks_sent += 1
            self.lateness.add(late_s)

    # -- reporting -----------------------------------------------------------------------------
    def snapshot(self, *, include_records: bool = True) -> dict[str, Any]:
        connections = [record.as_dict() for record in self._connection_ids.values()]
        snapshot: dict[str, Any] = {
            "time": time.time(),
            "reset_at": self.reset_at,
            "connections_accepted": len(connections),
            "connections": connections,
            "requests_total": self.requests_total,
            "status_counts": {str(code): n for code, n in sorted(self.status_counts.items())},
            "streams_started": self.streams_started,
            "streams_active": self.streams_active,
            "streams_active_max": self.streams_active_max,
            "streams_completed": self.streams_completed,
            "streams_faulted": self.streams_faulted,
            "chunks_sent": self.chunks_sent,
            "chunk_lateness": self.lateness.as_dict(),
            "disconnects": list(self.disconnects),
        }
        if include_records:
            snapshot["requests"] = [record.as_dict() for record in self.records]
        return snapshot
