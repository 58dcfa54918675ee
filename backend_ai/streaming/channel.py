"""Fan-in of one run: many section workers produce, the run's consumer reads, memory is bounded.

Producers post content chunks in batches — every chunk one network read completed — so a
burst costs one hand-off instead of one per chunk. At most ``capacity`` chunks (plus one batch
per producer) wait between the producers and the consumer. Two kinds of producer:

* a section's worker thread (``put_chunks``) that finds no room waits — its upstream read
  pauses, and flow control pushes back on the upstream once the socket buffers fill — until
  the consumer catches up, its section is cancelled, or ``backpressure_timeout_s`` passes;
  then it gives its section up with ``slow_consumer``;
* an HTTP/2 connection's reader thread (``offer_chunks``), which serves every stream of its
  connection and so must never wait: when there is no room it keeps the batch, stops
  returning that stream's flow-control window (the upstream pauses) and is called back from
  ``get`` once the consumer made room.

Control items (section start and end) always get through: there are at most a few per
section, and an end item must never be lost, or the consumer would wait for it forever.

The consumer may ``pause`` between writes (the run's flush interval): while it pauses, posted
chunks wait in the queue without waking it — at a model's pace that is what lets one wake and
one write carry several chunks. A control item and a full channel end the pause at once
(``_ring``), so neither an end, an error nor backpressure waits for the interval.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable

from backend_ai.streaming.events import ContentChunk, ErrorCode
from backend_ai.streaming.section_state import SectionState

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
        self._room_callbacks: list[Callable[[], None]] = []
        # A binary semaphore: released ("rung") to end the consumer's pause early. It stays
        # released until the consumer's next pause takes it, so a ring is never lost.
        self._bell = threading.Lock()
        self._bell.acquire()

    @property
    def backpressure_timeout_s(self) -> float:
        return self._backpressure_timeout_s

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
            if self._in_flight < self._capacity:
                self._in_flight += count
                return True
        self._ring()  # full: the consumer must not sit out its flush interval now
        return False

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

    def offer_chunks(self, chunks: list[ContentChunk], on_room: Callable[[], None]) -> bool:
        """Post a batch without waiting; when full, return False and call ``on_room`` once (from
        the consumer's ``get``) when there is room again."""
        with self._lock:
            full = self._in_flight >= self._capacity
            if full:
                self._room_callbacks.append(on_room)
            else:
                self._in_flight += len(chunks)
        if full:
            self._ring()  # the consumer must not sit out its flush interval now
            return False
        self._items.put(chunks)
        return True

    def force_chunks(self, chunks: list[ContentChunk]) -> None:
        """Post a batch whatever the room: for chunks already received when their stream ends,
        which are bounded by the stream's flow-control window."""
        with self._lock:
            self._in_flight += len(chunks)
        self._items.put(chunks)

    def put_control(self, item: object) -> None:
        self._items.put(item)
        self._ring()

    def _ring(self) -> None:
        """End the consumer's current or next pause."""
        with contextlib.suppress(RuntimeError):  # rung already and not yet taken
            self._bell.release()

    def pause(self, timeout: float) -> None:
        """On the consumer's thread: wait up to ``timeout`` seconds for a control item or a
        full channel; chunks posted meanwhile stay queued without waking the consumer."""
        self._bell.acquire(timeout=timeout)

    def get(self, timeout: float | None) -> object | None:
        """The next item (a control item or a list of chunks), or None when ``timeout`` passed."""
        try:
            item = self._items.get(timeout=timeout)
        except queue.Empty:
            return None
        if type(item) is list:
            callbacks = None
            with self._lock:
                self._in_flight -= len(item)
                room = self._in_flight < self._capacity
                wake = self._waiting and room
                if room and self._room_callbacks:
                    callbacks, self._room_callbacks = self._room_callbacks, []
            if wake:
                self._room.set()
            if callbacks:
                for callback in callbacks:
                    callback()
        return item
