"""A finished run leaves no reference cycle behind: reference counting alone frees all of it.

Why it matters: what a cycle keeps alive waits for the garbage collector, and objects that live
as long as a stream (seconds) reach its oldest generation, which only a full collection
frees. A full collection stops every thread of the process for as long as it scans and frees
(tens of milliseconds under load), so each run's left-over cycles become a pause for every
other open stream. The test turns automatic collection off, runs, then asks the collector for
what only it could have freed and fails on any object of backend_ai among it.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Iterator

import openai
import pytest

from backend_ai.streaming import ParallelStreamManager, PoolSettings
from backend_ai.streaming.events import ContentChunk

from .conftest import H1, H2, ClientFactory
from .helpers import collect, iter_until, section

RUNS = 5


@pytest.fixture
def cycles_only() -> Iterator[Callable[[], Counter[str]]]:
    """Automatic collection off; the call returns the types of backend_ai objects in cycles."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector frees lands in gc.garbage, to inspect

    def ours() -> Counter[str]:
        gc.collect()
        found = Counter(
            f"{type(o).__module__}.{type(o).__qualname__}"
            for o in gc.garbage
            if type(o).__module__.startswith("backend_ai")
        )
        gc.garbage.clear()
        return found

    try:
        yield ours
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


def _run_whole(manager: ParallelStreamManager) -> None:
    collect(manager.stream([section(f"s{i}", itl_ms=1, tokens=8) for i in range(3)]))


def _leave_mid_stream(manager: ParallelStreamManager) -> None:
    events = manager.stream([section(f"s{i}", itl_ms=5, tokens=200) for i in range(3)])
    iter_until(events, lambda e: isinstance(e, ContentChunk))
    events.close()  # the client went away: every upstream stream is cancelled


def _fail_one(manager: ParallelStreamManager) -> None:
    broken, cut = section("broken", status=500), section("cut", error_after=3)
    collect(manager.stream([section("ok", tokens=5), broken, cut]))


@pytest.mark.parametrize("pool", [H2, H1], ids=["http2", "http1"])
@pytest.mark.parametrize("scenario", [_run_whole, _leave_mid_stream, _fail_one])
def test_a_run_leaves_no_reference_cycle(
    make_client: ClientFactory,
    make_manager: Callable[..., ParallelStreamManager],
    cycles_only: Callable[[], Counter[str]],
    pool: PoolSettings,
    scenario: Callable[[ParallelStreamManager], None],
) -> None:
    client: openai.OpenAI = make_client(pool)
    manager = make_manager(client)
    scenario(manager)  # warm: connection, lazily built state
    cycles_only()
    for _ in range(RUNS):
        scenario(manager)
    assert cycles_only() == Counter()
