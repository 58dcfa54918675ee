"""Cancel, from any thread, whatever a worker thread opened upstream.

A section's worker enters its ``CancelScope`` around the request; every cancellable thing it
opens on that thread (an HTTP/2 stream, an HTTP/1.1 request in flight) registers a callback
with ``register_cancel``. The consumer, on its own thread, calls ``scope.cancel()`` — before,
during or after the request — and each callback stops its piece at once (a stream reset, a
socket shutdown). Leaving the scope detaches it, so a late cancel can never touch a connection
that went back to the pool and now serves another request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["CancelScope", "register_cancel"]

_current = threading.local()


class CancelScope:
    """Collects the cancel callbacks of what a thread opens so another thread can cancel them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._cancelled = False
        self._closed = False
        self._handed_off = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Run every registered callback once; later registrations run at once."""
        with self._lock:
            if self._cancelled or self._closed:
                self._cancelled = True
                return
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def attach(self, callback: Callable[[], None]) -> None:
        """Register ``callback``; run it now if the scope is already cancelled (and open)."""
        with self._lock:
            if not self._cancelled and not self._closed:
                self._callbacks.append(callback)
                return
            cancel_now = self._cancelled and not self._closed
        if cancel_now:
            callback()

    def attach_fallback(self, callback: Callable[[], None]) -> None:
        """Register ``callback`` unless the transport already registered what it opened.

        For clients whose transport does not register anything (the SDK's default one, say):
        cancellation then falls back to whatever ``callback`` can do from outside.
        """
        with self._lock:
            armed = bool(self._callbacks)
        if not armed:
            self.attach(callback)

    def __enter__(self) -> CancelScope:
        _current.scope = self
        return self

    def hand_off(self) -> None:
        """Keep the scope armed after this thread leaves it: whoever took the work over (a
        connection's reader feeding the section) calls ``close`` when it is done."""
        self._handed_off = True

    def __exit__(self, *exc_info: object) -> None:
        _current.scope = None
        if not self._handed_off:
            self.close()

    def close(self) -> None:
        """Forget the registered callbacks: call it once the response is read to its end."""
        with self._lock:
            self._closed = True
            self._callbacks = []


def current_scope() -> CancelScope | None:
    """The scope the current thread entered, if any."""
    return getattr(_current, "scope", None)


def register_cancel(callback: Callable[[], None]) -> None:
    """Attach ``callback`` to the scope the current thread entered; a no-op when there is none."""
    scope = current_scope()
    if scope is not None:
        scope.attach(callback)
