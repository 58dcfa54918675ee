"""Fan-in of one run: many section workers produce, the run's consumer reads, memory is bounded.

Content chunks need a credit to enter; the consumer returns the credit when it takes the
chunk, so at most ``capacity`` chunks wait between the workers and the consumer. A worker that
finds no credit waits (its upstream read pauses, and TCP/HTTP/2 flow control pushes back on the
upstream) until the consumer catches up, its section is cancelled, or ``backpressure_timeout_s``
passes — then it gives its section up with ``slow_consumer``. Control items (section start and
end) need no credit: there are at most a few per section, and a worker's end item must always
get through, or the consumer would wait for it forever.
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

_CREDIT_POLL_S = 0.02


class RunChannel:
    def __init__(self, capacity: int, backpressure_timeout_s: float) -> None:
        self._items: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._credits = threading.Semaphore(capacity)
        self._backpressure_timeout_s = backpressure_timeout_s

    def put_chunk(self, chunk: ContentChunk, state: SectionState) -> bool:
        """Enqueue a chunk; False when the section was cancelled instead (stop reading)."""
        if state.cancel_code is not None:
            return False
        if not self._credits.acquire(blocking=False) and not self._wait_for_credit(state):
            return False
        self._items.put(chunk)
        return True

    def _wait_for_credit(self, state: SectionState) -> bool:
        give_up_at = time.monotonic() + self._backpressure_timeout_s
        while not self._credits.acquire(timeout=_CREDIT_POLL_S):
            if state.cancel_code is not None:
                return False
            if time.monotonic() >= give_up_at:
                state.cancel(ErrorCode.SLOW_CONSUMER)
                return False
        return True

    def put_control(self, item: object) -> None:
        self._items.put(item)

    def get(self, timeout: float | None) -> object | None:
        """The next item, or None when ``timeout`` passed first."""
        try:
            item = self._items.get(timeout=timeout)
        except queue.Empty:
            return None
        if type(item) is ContentChunk:
            self._credits.release()
        return item
