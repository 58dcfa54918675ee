"""The Flask extension that wires the engine into an app, once per app (so once per process).

State lives in ``app.extensions["backend_ai"]`` as a ``ServiceState``, never on the extension
object, as Flask extensions do: one ``BackendAI`` may serve several apps (every test builds its
own). The state owns the long-lived objects — the pooled HTTP/2 client, the ``openai`` client
over it, the bounded section executor, the ``ParallelStreamManager``, the history writer, the
metrics registry — sized from its ``Settings`` and closed in ``ServiceState.close()``: called
by gunicorn's ``worker_exit`` hook, by tests, and as a last resort at interpreter exit.
Nothing here opens a socket or starts a thread: those happen on first use, so an app built in
a gunicorn master forks cleanly.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import weakref
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, cast

import openai

from backend_ai.app.history import HistoryStore
from backend_ai.app.metrics import ServiceMetrics
from backend_ai.app.rate_budget import build_rate_budget
from backend_ai.app.settings import Settings
from backend_ai.errors import ConfigError
from backend_ai.streaming import ParallelStreamManager, RunOptions
from backend_ai.streaming.batch import BatchOptions, BatchRunner
from backend_ai.streaming.budget import PerModelRateBudget
from backend_ai.streaming.config import Mode
from backend_ai.streaming.executor import SectionExecutor
from backend_ai.streaming.http_pool import HttpClientPool

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["EXTENSION_KEY", "BackendAI", "ServiceState", "build_state", "get_state", "live_states"]

logger = logging.getLogger(__name__)

EXTENSION_KEY = "backend_ai"
#: The key sent when the upstream needs none (a local OpenAI-compatible server, the simulator).
_PLACEHOLDER_KEY = "sk-no-key-needed"
_OPENAI_URL = "https://api.openai.com/v1"


@dataclass(eq=False)
class ServiceState:
    """Everything one app needs to serve streams; ``close()`` releases it, safe twice."""

    settings: Settings
    http_pool: HttpClientPool
    executor: SectionExecutor
    client: openai.OpenAI
    manager: ParallelStreamManager
    metrics: ServiceMetrics
    history: HistoryStore | None
    #: Batch runs (``POST /batch/stream``), on the same client, executor and rate budget.
    batch: BatchRunner | None = None
    #: The process's rate budget (``BACKEND_AI_RPM`` / ``BACKEND_AI_TPM``), None when unset.
    budget: PerModelRateBudget | None = None
    #: Set when the server begins a graceful shutdown: open streams end with a final event.
    draining: threading.Event = field(default_factory=threading.Event)
    closed: bool = False

    def run_options(self, mode: str) -> RunOptions:
        """The engine options of one run: the settings' ``run`` with the request's ordering mode."""
        return replace(self.settings.run, mode=Mode(mode))

    def begin_drain(self) -> None:
        """Start a graceful shutdown: open runs end now, each with its final ``done`` event.

        Called from a signal handler, so it only sets flags.
        """
        self.draining.set()
        # Flags only: refuses new runs, and each open run ends itself with ``done``.
        self.manager.close()
        if self.batch is not None:
            self.batch.close()

    def close(self) -> None:
        """Stop the engine, flush the history writer, close the HTTP pool."""
        if self.closed:
            return
        self.closed = True
        self.draining.set()
        # Open runs end first (flags only), then their threads stop being fed, then the
        # history is flushed, and last the connections close, which wakes any blocked reader.
        try:
            self.manager.close()
            if self.batch is not None:
                self.batch.close()
            self.executor.shutdown(wait=False)
        finally:
            try:
                if self.history is not None:
                    self.history.close()
            finally:
                self.http_pool.close()
                if self.budget is not None:
                    self.budget.close()  # its Redis connections, if any
        _live_states.discard(self)


_live_states: weakref.WeakSet[ServiceState] = weakref.WeakSet()


def live_states() -> list[ServiceState]:
    """Every service state of this process not closed yet (for shutdown hooks)."""
    return list(_live_states)


def _close_live_states() -> None:
    for state in live_states():
        try:
            state.close()
        except Exception as exc:  # at exit, keep closing the others
            logger.warning("closing the service state failed: %s", type(exc).__name__)


atexit.register(_close_live_states)


def _build_client(settings: Settings, pool: HttpClientPool) -> openai.OpenAI:
    if settings.openai_api_key is None and settings.openai_base_url is None:
        raise ConfigError(
            "neither OPENAI_API_KEY nor OPENAI_BASE_URL is set; set one, or run "
            "`backend-ai serve`, which starts the embedded simulator when both are unset"
        )
    headers: dict[str, str] = {}
    if settings.upstream_is_simulator and settings.sim_defaults:
        headers["X-Sim"] = json.dumps(dict(settings.sim_defaults), separators=(",", ":"))
    return openai.OpenAI(
        api_key=settings.openai_api_key or _PLACEHOLDER_KEY,
        # Explicit, so the SDK never falls back to reading OPENAI_BASE_URL itself.
        base_url=settings.openai_base_url or _OPENAI_URL,
        # The engine's pooled client.
        http_client=pool.get(),
        # The engine handles 429 (sequential fallback, Retry-After) and errors itself.
        max_retries=0,
        default_headers=headers or None,
    )


def build_state(settings: Settings) -> ServiceState:
    """The long-lived objects of one service, whatever the web framework; ``close()`` them."""
    pool = HttpClientPool(settings.http)
    client = _build_client(settings, pool)
    metrics = ServiceMetrics()
    history = None
    if settings.history_db_path is not None:
        history = HistoryStore(
            settings.history_db_path,
            queue_size=settings.history_queue_size,
            on_drop=metrics.history_dropped.inc,
            on_fail=metrics.history_failed.inc,
            max_age_s=(
                None
                if settings.history_max_age_days is None
                else settings.history_max_age_days * 86400
            ),
            max_rows=settings.history_max_rows,
        )
    executor = SectionExecutor(settings.max_workers)
    # None, this process's own, or shared through Redis; fed by every upstream answer.
    budget = build_rate_budget(settings, metrics, pool.get(), upstream=str(client.base_url))
    state = ServiceState(
        settings=settings,
        http_pool=pool,
        executor=executor,
        client=client,
        manager=ParallelStreamManager(client, executor=executor, budget=budget),
        metrics=metrics,
        history=history,
        batch=BatchRunner(
            client,
            executor=executor,
            budget=budget,
            options=BatchOptions(
                max_parallel=settings.batch_max_parallel,
                stall_timeout_s=settings.run.stall_timeout_s,
                max_retry_wait_s=settings.run.max_retry_wait_s,
                backpressure_timeout_s=settings.run.backpressure_timeout_s,
                include_usage=settings.run.include_usage,
            ),
        ),
        budget=budget,
    )
    _live_states.add(state)
    return state


class BackendAI:
    """``BackendAI(app)`` or ``ext = BackendAI(); ext.init_app(app, settings)``."""

    def __init__(self, app: Flask | None = None, settings: Settings | None = None) -> None:
        if app is not None:
            self.init_app(app, settings)

    def init_app(self, app: Flask, settings: Settings | None = None) -> ServiceState:
        """Build the app's ``ServiceState`` and store it in ``app.extensions``."""
        if EXTENSION_KEY in app.extensions:
            raise ConfigError("BackendAI is already initialised on this app")
        state = build_state(settings or Settings.from_env())
        app.extensions[EXTENSION_KEY] = state
        return state


def get_state(app: Flask | None = None) -> ServiceState:
    """The ``ServiceState`` of ``app`` (default: the current app)."""
    from flask import current_app

    target = app if app is not None else current_app
    return cast(ServiceState, target.extensions[EXTENSION_KEY])
