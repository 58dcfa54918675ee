"""This process's request threads, and a warning when every one of them holds an open stream.

Under gunicorn's gthread worker each open stream holds one request thread for its whole life. A
worker accepts connections whether or not it has a free thread, and the kernel does not spread
connections evenly over the workers, so a worker may be handed more streams than it has
threads: the extra ones wait, with nothing to show for it, until one of its streams ends, even
while another worker has threads to spare. The app cannot see a request that waits for a
thread, but it can see the moment the last thread takes a stream: from then on a new request on
this worker waits. ``StreamSlots`` counts the open streams against the thread count (given by
the gunicorn config when the worker starts; unknown elsewhere, and then nothing is checked),
logs a warning when they meet — at most once a minute, so a busy worker does not flood its log
— and tells the caller, which counts it in ``/metrics``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["STREAM_SLOTS", "StreamSlots"]

logger = logging.getLogger(__name__)

#: Shortest time between two warnings of one process.
WARN_EVERY_S = 60.0


class StreamSlots:
    """Open streams of this process against its request threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._threads: int | None = None
        self._open = 0
        self._warned_at: float | None = None

    def set_threads(self, count: int) -> None:
        """The number of request threads this process serves on (gunicorn's ``threads``)."""
        if count < 1:
            raise ValueError(f"a worker needs at least one request thread, not {count}")
        with self._lock:
            self._threads = count

    def opened(self) -> bool:
        """A stream opened; True when it took the last free request thread."""
        with self._lock:
            self._open += 1
            full = self._open == self._threads
            now = self._clock()
            warn = full and (self._warned_at is None or now - self._warned_at >= WARN_EVERY_S)
            if warn:
                self._warned_at = now
        if warn:
            logger.warning(
                "all %d request threads of this worker hold open streams: a new request here "
                "waits until one ends. gunicorn does not balance connections between workers; "
                "serve with more threads per worker (--threads)",
                self._threads,
            )
        return full

    def closed(self) -> None:
        """A stream ended (or its client went away)."""
        with self._lock:
            self._open -= 1


#: The process's one instance: the gunicorn config sets its threads, every stream counts in it.
STREAM_SLOTS = StreamSlots()
