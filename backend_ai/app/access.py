"""WSGI middleware around the app: one access-log line per request, and a send timeout.

The access line is written when the server closes the response — for a stream that is after
its last event, or after the client went away — so it can carry how the run ended:

    request_id=5f0c… path=/dream/interpret-stream route=dream sections=3 status=200
    duration_ms=2712.4 first_chunk_ms=305.1 outcome=ok

It never holds a prompt, a model's text, a header or a key: only the path (shortened, with
unprintable characters replaced), the status and what the run recorded about itself.
``outcome`` is the run's (``ok``, ``partial``, ``failed``, ``cancelled``) for streams, and
``ok`` / ``refused`` (4xx) / ``error`` (5xx) for other requests.

The send timeout bounds how long a client may take none of a response's bytes. gthread writes
a response with blocking ``sendall`` on the request thread, with no timeout of its own: a
client that stops reading pins that thread until the run's backpressure timeout ends the run,
and the socket after that. Setting ``SO_SNDTIMEO`` on the client socket (gunicorn puts it in
the environ as ``gunicorn.socket``) makes a ``send`` that moved no byte for that long fail;
gunicorn then closes the response — which cancels the run and every upstream stream of it — and
the connection, and the thread is free. Under a server that does not expose its socket the
timeout is not set and the run's backpressure timeout is the bound.

A stream cut before its final event (the send timed out, or the client went away) also has its
socket aborted before the server closes it: ``SO_LINGER`` zero and the read side shut. gthread
closes a connection on its main loop "gracefully", waiting up to 2 s for the peer to close;
a peer that stopped reading never does, so without this each dropped client would stall the
worker's main loop — every other connection of the worker — for those seconds.
"""

from __future__ import annotations

import logging
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

__all__ = ["ACCESS_KEY", "AccessLog", "RunSummary", "abort_connection", "set_send_timeout"]

logger = logging.getLogger("backend_ai.access")

#: WSGI environ key under which a streaming route leaves its run's ``RunSummary``.
ACCESS_KEY = "backend_ai.access"


class RunSummary(Protocol):
    """What the access line reports about a run; ``streaming.RunRecorder`` is one."""

    request_id: str
    route: str
    #: None while the run has not finished (the line then says ``cancelled``).
    outcome: str | None
    #: From the request reaching the app to the run's first content chunk.
    first_chunk_ms: float | None

    def section_count(self) -> int: ...

    def cut(self) -> bool:
        """True when the stream ended before its final event went out."""
        ...


def set_send_timeout(sock: socket.socket, seconds: float) -> None:
    """``SO_SNDTIMEO`` on ``sock``: a blocking send that moves nothing for ``seconds`` fails."""
    whole = int(seconds)
    micros = round((seconds - whole) * 1_000_000)
    # struct timeval: two C longs on Linux; on macOS a long and a 32-bit int, padded to 16.
    layout = "@ll" if sys.platform.startswith("linux") else "@li4x"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack(layout, whole, micros))


def abort_connection(sock: socket.socket) -> None:
    """Make the server's coming close immediate: reset, unsent bytes dropped, no linger."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:  # already reset by the peer: nothing left to abort
        pass


def _clean(path: str) -> str:
    short = "".join(ch if ch.isprintable() and ch != " " else "?" for ch in path[:120])
    return short + ("..." if len(path) > 120 else "")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


class _Closing:
    """The app's response iterable, logging the access line when the server closes it.

    Iteration goes straight to the wrapped iterable (no per-chunk work here).
    """

    def __init__(self, inner: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._inner = inner
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._inner)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


class AccessLog:
    """WSGI middleware: access line on close, ``SO_SNDTIMEO`` on the client socket, and an
    aborted socket under a cut stream."""

    def __init__(
        self,
        wsgi_app: Callable[..., Iterable[bytes]],
        *,
        send_timeout_s: float | None,
        enabled: bool = True,
    ) -> None:
        self.wsgi_app = wsgi_app
        self.send_timeout_s = send_timeout_s
        self.enabled = enabled

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        sock = environ.get("gunicorn.socket")
        if self.send_timeout_s is not None and isinstance(sock, socket.socket):
            try:
                set_send_timeout(sock, self.send_timeout_s)
            except OSError as exc:  # a platform without SO_SNDTIMEO: backpressure still bounds
                logger.debug("send timeout not set: %s", exc)
        status: list[str] = []

        def recording_start_response(code: str, headers: Any, *args: Any) -> Any:
            status[:] = [code]
            return start_response(code, headers, *args)

        def on_close() -> None:
            run: RunSummary | None = environ.get(ACCESS_KEY)
            if run is not None and isinstance(sock, socket.socket) and run.cut():
                abort_connection(sock)
            if self.enabled:
                log_line(run)

        def log_line(run: RunSummary | None) -> None:
            code = int(status[0].split(" ", 1)[0]) if status else 0
            if run is not None:
                outcome = run.outcome or "cancelled"
                fields = (run.request_id, run.route, run.section_count(), run.first_chunk_ms)
            else:
                outcome = "ok" if code < 400 else "refused" if code < 500 else "error"
                fields = ("-", "-", 0, None)
            request_id, route, sections, first_chunk_ms = fields
            logger.info(
                "request_id=%s path=%s route=%s sections=%d status=%d duration_ms=%.1f "
                "first_chunk_ms=%s outcome=%s",
                request_id,
                _clean(environ.get("PATH_INFO", "")),
                route,
                sections,
                code,
                (time.perf_counter() - started) * 1000,
                _ms(first_chunk_ms),
                outcome,
            )

        try:
            inner = self.wsgi_app(environ, recording_start_response)
        except BaseException:
            if self.enabled:
                log_line(None)
            raise
        return _Closing(inner, on_close)
