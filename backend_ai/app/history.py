"""The reading history: finished runs saved to SQLite by a background writer, read back on demand.

Side work must never delay the first token. A stream therefore only *offers* its finished
reading to ``HistoryStore.submit`` — a non-blocking put on a bounded queue — and one named
writer thread per process does the SQLite work. If the queue is full (a slow or stuck
disk) the record is dropped and counted, never waited for; if SQLite fails, the error is logged
and the writer goes on. Reads (``recent``) open their own short-lived connection with a busy
timeout, so they never share state with the writer. Several gunicorn workers may write the same
file: WAL mode and the busy timeout let them.

The writer takes everything queued (up to ``_MAX_BATCH`` readings) and saves it in one
transaction, so a burst of finished readings, or a backlog behind a slow disk, costs one commit
instead of one per statement. WAL mode runs with ``synchronous=NORMAL``, SQLite's recommended
setting for WAL: a commit does not wait for the disk (the WAL is synced at checkpoints), every
committed reading survives a crash of the process, and only a power loss or an operating-system
crash may lose the last commits, which a history of readings can afford. A reading that cannot
be serialised fails alone; a batch SQLite refuses is rolled back and counted in ``failed``.

Retention is the writer's job too: after each batch it deletes readings older than
``max_age_s`` and all but the newest ``max_rows`` (both indexed deletes that find nothing to do
almost every time), so the file stays bounded without a cron job and without a request ever
waiting for it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["HistoryRecord", "HistoryStore", "SavedSection"]

logger = logging.getLogger(__name__)

_BUSY_TIMEOUT_S = 2.0
#: The most readings one transaction saves: large enough that a backlog clears in a few commits,
#: small enough that a commit stays short for the other workers writing the same file.
_MAX_BATCH = 256
_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    route TEXT NOT NULL,
    created_at REAL NOT NULL,
    duration_ms REAL NOT NULL,
    cancelled INTEGER NOT NULL,
    input TEXT NOT NULL,
    sections TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_created ON readings (created_at);
"""
_STOP = object()


@dataclass(frozen=True, slots=True)
class SavedSection:
    """What one section produced: its text and how it went."""

    text: str
    status: str  # "done", "error" or "incomplete" (the run ended before the section did)
    model: str | None = None
    ttft_ms: float | None = None
    duration_ms: float | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One finished reading as stored."""

    request_id: str
    route: str
    created_at: float
    duration_ms: float
    cancelled: bool
    input: Mapping[str, Any]
    sections: Mapping[str, SavedSection] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "route": self.route,
            "created_at": self.created_at,
            "duration_ms": self.duration_ms,
            "cancelled": self.cancelled,
            "input": dict(self.input),
            "sections": {name: asdict(rec) for name, rec in self.sections.items()},
        }


def _row(record: HistoryRecord) -> tuple[Any, ...]:
    """The ``readings`` row of ``record`` (without its id)."""
    return (
        record.request_id,
        record.route,
        record.created_at,
        record.duration_ms,
        int(record.cancelled),
        json.dumps(dict(record.input)),
        json.dumps({name: asdict(rec) for name, rec in record.sections.items()}),
    )


def _row_json(row: tuple[Any, ...]) -> dict[str, Any]:
    request_id, route, created_at, duration_ms, cancelled, input_json, sections_json = row
    return {
        "request_id": request_id,
        "route": route,
        "created_at": created_at,
        "duration_ms": duration_ms,
        "cancelled": bool(cancelled),
        "input": json.loads(input_json),
        "sections": json.loads(sections_json),
    }


class HistoryStore:
    """A SQLite file with one background writer; ``close()`` drains what is queued."""

    def __init__(
        self,
        path: str,
        *,
        queue_size: int = 1000,
        on_drop: Callable[[], None] | None = None,
        on_fail: Callable[[int], None] | None = None,
        max_age_s: float | None = None,
        max_rows: int | None = None,
    ) -> None:
        self._path = path
        self._max_age_s = max_age_s
        self._max_rows = max_rows
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._on_drop = on_drop
        self._on_fail = on_fail
        self._closed = False
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        #: Readings dropped because the queue was full, and readings whose write failed.
        self.dropped = 0
        self.failed = 0
        #: Readings saved, and the transactions that saved them (a backlog shares one).
        self.written = 0
        self.commits = 0
        self._writer: threading.Thread | None = None

    def _ensure_writer(self) -> None:
        # Started on first use so an app built in a gunicorn master never forks a live thread.
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._run, name="backend-ai-history-writer", daemon=True
            )
            self._writer.start()

    def submit(self, record: HistoryRecord) -> bool:
        """Queue ``record`` for writing without blocking; False (and counted) if dropped."""
        with self._lock:
            if self._closed:
                return False
            self._ensure_writer()
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                self.dropped += 1
                dropped = True
            else:
                self._pending += 1
                dropped = False
        if dropped:
            logger.warning("history queue full: a reading was not saved")
            if self._on_drop is not None:
                self._on_drop()
        return not dropped

    def flush(self, timeout: float) -> bool:
        """Wait until every queued record is written (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recent readings, newest first."""
        if not os.path.exists(self._path):
            return []
        conn = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S)
        try:
            rows = conn.execute(
                "SELECT request_id, route, created_at, duration_ms, cancelled, input, sections "
                "FROM readings ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()
        return [_row_json(row) for row in rows]

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to ``timeout``), then stop the writer; safe twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            writer = self._writer
        if writer is None or not writer.is_alive():
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            logger.warning("history writer did not drain in time; unsaved readings dropped")
            return
        writer.join(timeout)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        stopping = False
        while not stopping:
            batch: list[HistoryRecord] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, HistoryRecord)
                batch.append(item)
                if len(batch) >= _MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if not batch:
                continue
            rows: list[tuple[Any, ...]] = []
            try:
                rows = self._rows(batch)
                if rows:
                    if conn is None:
                        conn = self._connect()
                    self._write(conn, rows)
            except Exception as exc:  # a failing disk must not kill the writer
                self._count_failed(len(rows))
                logger.error(
                    "history write failed: %s; %d reading(s) not saved",
                    type(exc).__name__,
                    len(rows),
                )
                if conn is not None:
                    conn.close()
                    conn = None
            finally:
                with self._idle:
                    self._pending -= len(batch)
                    if not self._pending:
                        self._idle.notify_all()
        if conn is not None:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(self._path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        # Limits may have shrunk since the file was last written: apply them at once.
        self._prune(conn, conn.execute("SELECT MAX(id) FROM readings").fetchone()[0])
        return conn

    def _rows(self, batch: list[HistoryRecord]) -> list[tuple[Any, ...]]:
        """The rows of ``batch``; a reading that is not JSON is counted as failed and left out."""
        rows = []
        for record in batch:
            try:
                rows.append(_row(record))
            except Exception as exc:  # not JSON (an object, a cycle, too deep): it alone is lost
                self._count_failed(1)
                logger.error("history: a reading could not be serialised (%s)", type(exc).__name__)
        return rows

    def _count_failed(self, count: int) -> None:
        self.failed += count
        if self._on_fail is not None:
            self._on_fail(count)

    def _write(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        """Save ``rows`` in one transaction, and apply retention in the same one."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO readings (request_id, route, created_at, duration_ms, cancelled, "
                "input, sections) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            newest_id = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            self._prune(conn, newest_id)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.written += len(rows)
        self.commits += 1

    def _prune(self, conn: sqlite3.Connection, newest_id: int | None) -> None:
        """Delete what retention no longer keeps (ids only grow: AUTOINCREMENT)."""
        if self._max_rows is not None and newest_id is not None:
            conn.execute("DELETE FROM readings WHERE id <= ?", (newest_id - self._max_rows,))
        if self._max_age_s is not None:
            cutoff = time.time() - self._max_age_s
            conn.execute("DELETE FROM readings WHERE created_at < ?", (cutoff,))
