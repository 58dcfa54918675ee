"""Engine fixtures: an SDK client on the pooled HTTP/2 client, a private executor and stats.

The upstream is the real simulator (``simulator`` fixture from the plugin: fast profile,
reset for every test). Every client built here is closed at teardown, and every test must
leave no thread inside a section worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx2
import openai
import pytest

from backend_ai.simulator import SimulatorProcess
from backend_ai.streaming import ParallelStreamManager, PoolSettings, RunOptions, build_http_client
from backend_ai.streaming.executor import SectionExecutor
from backend_ai.streaming.stats import StreamStats
from tests.support.waiting import wait_until

from .helpers import API_KEY, threads_in_run_section

H2 = PoolSettings(http2_prior_knowledge=True)
H1 = PoolSettings(http2=False)

ClientFactory = Callable[..., openai.OpenAI]


@pytest.fixture
def make_client(simulator: SimulatorProcess) -> Iterator[ClientFactory]:
    """Build SDK clients over ``build_http_client``; all are closed after the test."""
    built: list[tuple[openai.OpenAI, httpx2.Client]] = []

    def make(
        settings: PoolSettings = H2,
        *,
        sim: SimulatorProcess | None = None,
        max_retries: int = 0,
        verify: object = True,
    ) -> openai.OpenAI:
        http_client = build_http_client(settings, verify=verify)  # type: ignore[arg-type]
        client = openai.OpenAI(
            api_key=API_KEY,
            base_url=(sim or simulator).base_url,
            http_client=http_client,
            max_retries=max_retries,
        )
        built.append((client, http_client))
        return client

    yield make
    for client, http_client in built:
        client.close()
        http_client.close()


@pytest.fixture
def client(make_client: ClientFactory) -> openai.OpenAI:
    """SDK client over one pooled HTTP/2 (prior knowledge) connection to the simulator."""
    return make_client(H2)


@pytest.fixture
def executor() -> Iterator[SectionExecutor]:
    pool = SectionExecutor(32)
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture
def stats() -> StreamStats:
    return StreamStats()


@pytest.fixture
def make_manager(
    client: openai.OpenAI, executor: SectionExecutor, stats: StreamStats
) -> Iterator[Callable[..., ParallelStreamManager]]:
    managers: list[ParallelStreamManager] = []

    def make(
        sdk: openai.OpenAI | None = None, options: RunOptions | None = None
    ) -> ParallelStreamManager:
        manager = ParallelStreamManager(
            sdk or client, options=options, executor=executor, stats=stats
        )
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.close()


@pytest.fixture
def manager(make_manager: Callable[..., ParallelStreamManager]) -> ParallelStreamManager:
    return make_manager()


@pytest.fixture(autouse=True)
def no_section_worker_left_behind() -> Iterator[None]:
    """Every run a test started must have freed its workers by the end of the test."""
    yield
    try:
        wait_until(lambda: not threads_in_run_section(), timeout=3.0)
    except AssertionError:
        pytest.fail(f"section workers still running after the test: {threads_in_run_section()}")
