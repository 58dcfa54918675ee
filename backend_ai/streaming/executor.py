"""The bounded thread pool that runs section workers, shared by every run of a process.

Why shared and bounded: a thread per section per request would let a burst of requests
create an unbounded number of threads; a pool per run would pay thread start-up on every
request and still be unbounded in total. One process-wide pool caps the threads (and so the
upstream streams) a process runs at once.

Why it cannot deadlock: workers never wait on other workers. The consumer of a run is the
request's own thread (a gunicorn/WSGI thread), never a pool thread, and a worker's only blocking
points are the upstream socket and the run's bounded buffer, both of which end by deadline,
stall timeout, backpressure timeout or cancellation.

Why no request starves: submissions are served first in, first out, and every run submits at
most ``max_parallel`` sections at a time, so a run with many sections queues behind earlier
runs instead of taking the whole pool. Size the pool to at least gunicorn's threads per worker
times the sections of a typical run (``BACKEND_AI_MAX_WORKERS``, default ``DEFAULT_MAX_WORKERS``);
when it is full, new sections wait their turn (the run's deadline still applies) rather than
fail.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from backend_ai.errors import ConfigError, LifecycleError
from backend_ai.streaming import environment
from backend_ai.streaming.environment import Variable

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "MAX_WORKERS_VARIABLE",
    "SectionExecutor",
    "get_section_executor",
    "max_workers_from_env",
    "shutdown_section_executor",
]

#: The pool's size unless ``BACKEND_AI_MAX_WORKERS`` or the caller says otherwise; the service's
#: settings use it too. The shipped gunicorn's 128 threads per worker times three sections a
#: run is 384: over HTTP/1.1 a section holds its thread for the whole stream (over HTTP/2 only
#: while its request is set up). Threads are started only when needed.
DEFAULT_MAX_WORKERS = 384


#: The pool's size in the environment; the service's settings read it through this too.
MAX_WORKERS_VARIABLE = Variable("BACKEND_AI_MAX_WORKERS", "max_workers", environment.integer)


def max_workers_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``BACKEND_AI_MAX_WORKERS``, else ``DEFAULT_MAX_WORKERS``; checked by ``SectionExecutor``."""
    return environment.value(
        MAX_WORKERS_VARIABLE, DEFAULT_MAX_WORKERS, environ, check=_check_max_workers
    )


def _check_max_workers(workers: object) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"max_workers must be a positive integer, got {workers!r}")


class SectionExecutor:
    """A named, bounded ``ThreadPoolExecutor`` with an explicit lifecycle."""

    def __init__(self, max_workers: int | None = None) -> None:
        workers = max_workers_from_env() if max_workers is None else max_workers
        _check_max_workers(workers)
        self.max_workers = workers
        self._threads = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="backend-ai-section"
        )
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        if self._closed:
            raise LifecycleError("cannot run sections after the executor was shut down")
        return self._threads.submit(fn, *args)

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop taking work; safe to call twice. Running sections finish (or are cancelled)."""
        self._closed = True
        self._threads.shutdown(wait=wait, cancel_futures=True)

    @property
    def closed(self) -> bool:
        return self._closed


_default: SectionExecutor | None = None
_default_lock = threading.Lock()


def get_section_executor() -> SectionExecutor:
    """The process-wide executor, created on first use (after any gunicorn fork)."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = SectionExecutor()
        return _default


def shutdown_section_executor(*, wait: bool = True) -> None:
    global _default
    with _default_lock:
        executor, _default = _default, None
    if executor is not None:
        executor.shutdown(wait=wait)


def _forget_after_fork() -> None:
    # Threads do not survive fork; the child builds its own pool on first use.
    global _default, _default_lock
    _default, _default_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
