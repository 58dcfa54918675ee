"""The shared state of one section of a run, read and written by several threads.

It lives apart from the worker and the channel because both use it: the channel updates it
while a producer waits for room, the worker and the HTTP/2 reader while they deliver, the
run's consumer while it schedules and times sections out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backend_ai.streaming.cancel import CancelScope
from backend_ai.streaming.config import StreamConfig
from backend_ai.streaming.events import ErrorCode

__all__ = ["SectionState"]


@dataclass(slots=True)
class SectionState:
    """One section as the run's consumer sees it, and who writes each field.

    * ``last_activity`` — when the section last showed life, for the consumer's stall timer.
      Written by whoever produces for the section: the worker (when it starts and after each
      read), the HTTP/2 reader's sink (after each read, and while it holds chunks for a full
      channel), and the channel itself while a producer waits for room — waiting on the
      consumer is not an upstream stall. The consumer sets it to 0 when it submits the section
      (stall timing starts when a worker picks it up).
    * ``cancel_code``, ``cancel_message`` — written only through ``cancel``, from any thread:
      the consumer (timers, shutdown, a client that went away), the channel (a consumer that
      stopped reading: ``slow_consumer``), the connection pool's housekeeper (same reason).
    * ``scope`` — replaced by the consumer (``next_attempt``) between attempts, never while a
      worker runs the section.
    * ``announced``, ``chunks`` — written by the section's producer: ``announced`` once it
      posted the section's start, ``chunks`` (the count delivered so far) right before it
      posts the end item, so the consumer reads it only after that item.
    * ``rate_limited``, ``running`` — written only by the consumer.

    Single-field writes and reads are atomic under the interpreter's lock; no field needs
    more than that, because each is either written by one thread at a time or only ever moves
    one way (a cancel is never undone).
    """

    config: StreamConfig
    scope: CancelScope = field(default_factory=CancelScope)
    cancel_code: ErrorCode | None = None
    cancel_message: str | None = None
    last_activity: float = 0.0
    rate_limited: int = 0
    announced: bool = False
    running: bool = False
    chunks: int = 0

    @property
    def name(self) -> str:
        return self.config.section_name

    def cancel(self, code: ErrorCode, message: str | None = None) -> None:
        """Stop this section from any thread; the first reason given wins."""
        if self.cancel_code is None:
            self.cancel_code = code
            self.cancel_message = message
        self.scope.cancel()

    def next_attempt(self) -> None:
        """A fresh scope for a retry after 429 (the old one is spent)."""
        self.scope = CancelScope()
