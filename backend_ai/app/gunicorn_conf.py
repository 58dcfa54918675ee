"""gunicorn settings for long-lived SSE streams, and the hooks that make shutdown graceful.

Used by ``backend-ai serve`` (``-c python:backend_ai.app.gunicorn_conf``) and, through the
repository's ``gunicorn.conf.py``, by a plain ``gunicorn`` run from the repository root.
Command-line flags (``--bind``, ``--workers``, ``--threads``) override these values.

Why each choice:

* ``gthread``: the ``sync`` worker handles one request at a time and is killed when a request
  outlives ``timeout`` (gunicorn #2537), which every long stream does. A gthread worker serves
  ``threads`` requests at once and its heartbeat comes from its main loop, not from requests,
  so a stream may last as long as the run's own deadline.
* ``threads``: each open stream holds one request thread for its whole life (the section
  workers run in the engine's own pool), so this is the number of concurrent streams a worker
  serves. A gthread worker accepts a connection whether or not it has a free thread, and the
  kernel does not spread connections evenly over the workers: of 100 streams on two workers
  one held about 71 in one run of four. A worker with more open streams than threads makes
  the rest wait, silently, each for some other stream to end (with 64 threads that run's first
  bytes came 171 ms late at the median), while the other worker has threads to spare. So one
  worker must be able to carry most of what the machine can stream: 128, about the two-core
  box's measured capacity. Idle threads cost nothing; the pool starts them only when needed.
* ``graceful_timeout``: on SIGTERM the worker stops accepting, every open stream ends with a
  final ``done`` event (``ServiceState.begin_drain``) and the worker exits once its connections
  are closed; this is the upper bound on that.
* metrics of every worker: ``on_starting`` (in the master, before any worker is forked) sets up
  prometheus-client's multiprocess directory — a fresh temporary one removed by ``on_exit``, or
  the one ``PROMETHEUS_MULTIPROC_DIR`` names, emptied of a previous run's files — and
  ``child_exit`` drops a dead worker's live gauges, so ``/metrics`` from any worker is the sum
  over the live ones (see ``backend_ai.app.metrics``).
* the garbage collector: ``post_worker_init`` freezes what the worker built while loading the
  app (``freeze_start_up_objects``). A full collection stops every thread of the worker while it
  scans every tracked object; with the app's ~100,000 start-up objects (modules, classes, the
  SDK's models) that measured 48–185 ms, several times a minute under load, each pause landing
  on every open stream at once. Frozen, they are never scanned again, and the long pauses go.
"""

from __future__ import annotations

import errno
import gc
import glob
import logging
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

__all__ = [
    "bind",
    "child_exit",
    "control_socket_disable",
    "freeze_start_up_objects",
    "graceful_timeout",
    "keepalive",
    "on_exit",
    "on_starting",
    "post_fork",
    "post_worker_init",
    "threads",
    "timeout",
    "worker_class",
    "worker_connections",
    "worker_exit",
    "workers",
    "wsgi_app",
]

logger = logging.getLogger(__name__)

#: prometheus-client's variable (``backend_ai.app.metrics.MULTIPROC_DIR_ENV``, not imported here:
#: importing prometheus-client in the master before the variable is set would fix its mode).
_MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The directory ``on_starting`` created in this master, for ``on_exit`` to remove.
_created_dir: str | None = None

wsgi_app = "backend_ai.app.factory:create_app()"
bind = "127.0.0.1:8000"
worker_class = "gthread"
workers = 2
#: Concurrent streams per worker: most of the machine's, since gunicorn does not balance
#: connections between workers (see the module docstring).
threads = 128
#: gthread: connections a worker holds at once (streams plus idle keep-alive ones).
worker_connections = 1000
#: The worker-heartbeat timeout; gthread beats from its main loop, streams never trip it.
timeout = 30
graceful_timeout = 10
keepalive = 5
#: gunicorn 24+ opens a control socket at a fixed path under $HOME: two servers (or a test run
#: next to a dev server) would fight over it, and nothing here uses it.
control_socket_disable = True


class _SendTimeoutFilter(logging.Filter):
    """gunicorn logs a send that hit ``SO_SNDTIMEO`` as "Socket error" with a traceback; it is
    the send timeout doing its job (a client that stopped reading was dropped): one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError) and exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            record.msg = "dropped a client that read nothing for the send timeout"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def post_fork(server: Any, worker: Any) -> None:
    """Send the app's log lines (``backend_ai.*``, access lines included) to gunicorn's log.

    Only when nothing else was set up: an app that configured logging keeps its own.
    """
    error_log = getattr(getattr(worker, "log", None), "error_log", None)
    if not isinstance(error_log, logging.Logger):
        return
    error_log.addFilter(_SendTimeoutFilter())
    app_logger = logging.getLogger("backend_ai")
    if app_logger.handlers or logging.getLogger().handlers:
        return
    for handler in error_log.handlers:
        app_logger.addHandler(handler)
    app_logger.setLevel(error_log.level)
    app_logger.propagate = False


def post_worker_init(worker: Any) -> None:
    """Tell the app how many request threads it streams on (``request_threads``: a warning when
    all of them hold streams), chain a drain onto the worker's SIGTERM handler (open streams end
    with ``done``), then freeze the loaded app's objects out of garbage collection (see the
    module docstring).

    Every service of the worker is drained: the Flask app's, or the one the Django integration
    builds on first use — which may not exist yet, so they are looked up when the signal comes.
    """
    from backend_ai.app.extension import live_states  # imported now, not in a signal handler
    from backend_ai.app.request_threads import STREAM_SLOTS

    STREAM_SLOTS.set_threads(worker.cfg.threads)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        for state in live_states():
            state.begin_drain()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    # gunicorn keeps system calls running across SIGTERM; keep it so for the new handler.
    signal.siginterrupt(signal.SIGTERM, False)
    frozen = freeze_start_up_objects()
    logger.info(
        "worker %s: %d start-up objects frozen out of garbage collection", os.getpid(), frozen
    )


def freeze_start_up_objects() -> int:
    """Collect once, then move every object alive now to the collector's permanent generation.

    Called when the worker has loaded the app: what exists then (modules, classes, the app, its
    engine) lives as long as the worker, so scanning it in every full collection only makes the
    pauses long. Objects created later are collected as before. Returns how many were frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def worker_exit(server: Any, worker: Any) -> None:
    """Release the worker's engines, history writers and HTTP pools before the worker goes."""
    from backend_ai.app.extension import live_states

    for state in live_states():
        state.close()


def on_starting(server: Any) -> None:
    """Give the workers a multiprocess metrics directory before the first one is forked."""
    path = os.environ.get(_MULTIPROC_DIR_ENV)
    if path:
        # A previous run's files would add its counts to ours (prometheus-client: wipe it).
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
        return
    global _created_dir
    _created_dir = os.environ[_MULTIPROC_DIR_ENV] = tempfile.mkdtemp(prefix="backend-ai-metrics-")
    if "prometheus_client" in sys.modules:
        # Its mode was fixed at import, before the directory existed (``preload_app``?).
        logger.warning(
            "prometheus-client was imported before its multiprocess directory was set: "
            "/metrics will describe only the worker that answers"
        )


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: drop its live gauges (its counters stay in the totals)."""
    path = os.environ.get(_MULTIPROC_DIR_ENV)
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, path)


def on_exit(server: Any) -> None:
    """Remove the metrics directory ``on_starting`` created (never one the user named)."""
    if _created_dir is not None:
        shutil.rmtree(_created_dir, ignore_errors=True)
