"""Fan-in of one run: many section workers produce, the run's consumer reads, memory is bounded.

Workers post content chunks in batches — every chunk one network read completed — so a burst
costs one hand-off instead of one per chunk. At most ``capacity`` chunks (plus one batch per
worker) wait between the workers and the consumer. A worker that finds no room waits — its
upstream read pauses, and flow control pushes back on the upstream once the socket buffers
(HTTP/1.1) or the stream's 16 MiB HTTP/2 window (httpcore's setting) fill — until the
consumer catches up, its section is cancelled, or ``backpressure_timeout_s`` passes — then it
gives its section up with ``slow_consumer``. Control items (section start and end) always get
through: there are at most a few per section, and a worker's end item must never be lost, or
the consumer would wait for it forever.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING

from backend_ai.app.services.parallel_streaming.events import ContentChunk, ErrorCode

if TYPE_CHECKING:
    from backend_ai.app.services.parallel_streaming.worker import SectionState

__all__ = ["RunChannel"]

_ROOM_POLL_S = 0.02


class RunChannel:
    def __init__(self, capacity: int, backpressure_timeout_s: float) -> None:
        self._items: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._capacity = capacity
        self._backpressure_timeout_s = backpressure_timeout_s
        self._in_flight = 0
        self._lock = threading.Lock()
        self._room = threading.Event()
        self._waiting = 0

    @property
    def in_flight(self) -> int:
        """Chunks posted and not yet taken by the consumer."""
        return self._in_flight

    def put_chunks(self, chunks: list[ContentChunk], state: SectionState) -> bool:
        """Post a batch of one section's chunks; False when the section was cancelled instead."""
        if state.cancel_code is not None:
            return False
        if not self._reserve(len(chunks)) and not self._wait_for_room(len(chunks), state):
            return False
        self._items.put(chunks)
        return True

    def _reserve(self, count: int) -> bool:
        with self._lock:
            if self._in_flight >= self._capacity:
                return False
            self._in_flight += count
            return True

    def _wait_for_room(self, count: int, state: SectionState) -> bool:
        give_up_at = time.monotonic() + self._backpressure_timeout_s
        with self._lock:
            self._waiting += 1
        try:
            while not self._reserve(count):
                if state.cancel_code is not None:
                    return False
                now = time.monotonic()
                # Waiting on the consumer is not an upstream stall.
                state.last_activity = now
                if now >= give_up_at:
                    state.cancel(ErrorCode.SLOW_CONSUMER)
                    return False
                self._room.wait(_ROOM_POLL_S)
                self._room.clear()
            return True
        finally:
            with self._lock:
                self._waiting -= 1

    def put_control(self, item: object) -> None:
        self._items.put(item)

    def get(self, timeout: float | None) -> object | None:
        """The next item (a control item or a list of chunks), or None when ``timeout`` passed."""
        try:
            item = self._items.get(timeout=timeout)
        except queue.Empty:
            return None
        if type(item) is list:
            with self._lock:
                self._in_flight -= len(item)
                wake = self._waiting and self._in_flight < self._capacity
            if wake:
                self._room.set()
        return item
