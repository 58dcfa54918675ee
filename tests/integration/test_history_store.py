"""The history writer: saves in the background, never blocks the caller, drains on close."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backend_ai.app.history import HistoryRecord, HistoryStore, SavedSection


def record(n: int, created_at: float | None = None) -> HistoryRecord:
    return HistoryRecord(
        request_id=f"r{n}",
        route="dream",
        created_at=time.time() if created_at is None else created_at,
        duration_ms=12.5,
        cancelled=False,
        input={"dream": f"dream {n}"},
        sections={"summary": SavedSection(text=f"text {n}", status="done", ttft_ms=3.0)},
    )


@contextmanager
def write_locked(path: Path, mode: str = "IMMEDIATE") -> Iterator[None]:
    """Another connection holds the database's write lock (``EXCLUSIVE``: reads wait too)."""
    blocker = sqlite3.connect(str(path), isolation_level=None)
    blocker.execute(f"BEGIN {mode}")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_records_round_trip(tmp_path: Path) -> None:
    store = HistoryStore(str(tmp_path / "h.sqlite3"))
    try:
        assert store.recent(5) == []  # no file yet
        for n in range(3):
            assert store.submit(record(n))
        assert store.flush(5.0)
        rows = store.recent(2)
        assert [r["request_id"] for r in rows] == ["r2", "r1"]
        assert rows[0]["sections"]["summary"]["text"] == "text 2"
        assert rows[0]["input"] == {"dream": "dream 2"}
    finally:
        store.close()


def test_submit_never_waits_for_a_locked_database(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(str(path), queue_size=2)
    dropped: list[int] = []
    store._on_drop = lambda: dropped.append(1)
    try:
        assert store.submit(record(0))
        assert store.flush(5.0)  # the file and its table exist
        with write_locked(path, "EXCLUSIVE"):  # a stuck disk: every write waits 2 s and fails
            started = time.perf_counter()
            results = [store.submit(record(n)) for n in range(1, 20)]
            elapsed = time.perf_counter() - started
        # 19 submissions against a writer stuck for seconds: all returned at once.
        assert elapsed < 0.05 * 2.0, f"{elapsed * 1000:.1f} ms"
        # The writer is stuck on one batch: what was queued when it woke (at most the queue's
        # two, plus the one it woke for); two more fill the queue again. The rest are dropped.
        assert results.count(False) >= 19 - 2 * (2 + 1)
        assert store.dropped == results.count(False) == len(dropped)
        assert store.flush(10.0)
    finally:
        store.close()


def test_the_database_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "state" / "backend_ai" / "h.sqlite3"
    store = HistoryStore(str(path))
    try:
        store.submit(record(1))
        assert store.flush(5.0)
        assert store.failed == 0
        assert len(store.recent(5)) == 1
    finally:
        store.close()


def test_close_writes_what_is_queued_and_is_safe_twice(tmp_path: Path) -> None:
    path = str(tmp_path / "h.sqlite3")
    store = HistoryStore(path)
    for n in range(5):
        store.submit(record(n))
    store.close()
    store.close()
    assert not store.submit(record(9))
    assert len(HistoryStore(path).recent(10)) == 5


def count_rows(path: Path) -> int:
    conn = sqlite3.connect(str(path))
    try:
        return int(conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
    finally:
        conn.close()


def test_the_writer_keeps_only_the_newest_max_rows(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(str(path), max_rows=5)
    try:
        for n in range(12):
            store.submit(record(n))
        assert store.flush(5.0)
        assert count_rows(path) == 5
        assert [r["request_id"] for r in store.recent(100)] == [f"r{n}" for n in range(11, 6, -1)]
    finally:
        store.close()


def test_the_writer_prunes_readings_older_than_max_age(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    day = 86400.0
    store = HistoryStore(str(path), max_age_s=30 * day)
    try:
        store.submit(record(0, created_at=time.time() - 40 * day))
        store.submit(record(1, created_at=time.time() - 29 * day))
        store.submit(record(2))
        assert store.flush(5.0)
        assert [r["request_id"] for r in store.recent(100)] == ["r2", "r1"]
    finally:
        store.close()


def test_limits_apply_to_a_file_written_before_they_shrank(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(str(path))
    for n in range(10):
        store.submit(record(n))
    store.close()
    assert count_rows(path) == 10
    smaller = HistoryStore(str(path), max_rows=3)
    try:
        smaller.submit(record(10))
        assert smaller.flush(5.0)
        assert count_rows(path) == 3
    finally:
        smaller.close()


def test_without_limits_nothing_is_pruned(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(str(path))
    try:
        store.submit(record(0, created_at=time.time() - 1000 * 86400))
        for n in range(1, 30):
            store.submit(record(n))
        assert store.flush(5.0)
        assert count_rows(path) == 30
    finally:
        store.close()


def test_a_backlog_is_saved_in_one_transaction(tmp_path: Path) -> None:
    # The commit (and its fsync) bounds how many readings a disk takes before the queue fills;
    # readings that queued up while the disk was busy share one.
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(str(path))
    try:
        assert store.submit(record(0))
        assert store.flush(5.0)
        assert (store.written, store.commits) == (1, 1)
        with write_locked(path):  # another worker writing: the writer waits
            for n in range(1, 101):
                assert store.submit(record(n))
        assert store.flush(10.0)
        assert store.failed == 0
        assert store.written == 101
        # The writer took the first reading (or the first few) before it met the lock; what
        # queued behind it goes in the next transaction.
        assert store.commits <= 3, store.commits
        assert count_rows(path) == 101
        assert [r["request_id"] for r in store.recent(2)] == ["r100", "r99"]
    finally:
        store.close()


def test_a_reading_that_is_not_json_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(str(path))
    cycle: list[object] = []
    cycle.append(cycle)
    deep: list[object] = []
    for _ in range(100_000):  # deeper than the interpreter's recursion limit
        deep = [deep]

    def broken(name: str, value: object) -> HistoryRecord:
        return HistoryRecord(
            request_id=name,
            route="dream",
            created_at=time.time(),
            duration_ms=1.0,
            cancelled=False,
            input={"dream": value},
        )

    try:
        items = [record(1), broken("object", object()), broken("cycle", cycle)]
        items += [broken("deep", deep), record(2)]
        for item in items:
            assert store.submit(item)
        assert store.flush(5.0)
        assert store.failed == 3
        assert [r["request_id"] for r in store.recent(10)] == ["r2", "r1"]
        # The writer is still there for the next reading.
        assert store.submit(record(3))
        assert store.flush(5.0)
        assert store.recent(1)[0]["request_id"] == "r3"
    finally:
        store.close()


def test_retention_applies_within_one_batch(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(str(path), max_rows=5)
    try:
        assert store.submit(record(0))
        assert store.flush(5.0)
        with write_locked(path):
            for n in range(1, 40):
                store.submit(record(n))
        assert store.flush(10.0)
        assert count_rows(path) == 5
        assert [r["request_id"] for r in store.recent(100)] == [f"r{n}" for n in range(39, 34, -1)]
    finally:
        store.close()
