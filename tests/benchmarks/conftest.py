"""Shared pieces of the benchmark tests: the peers package on the path, small profiles, peers.

These tests are pytest-benchmark tests that double as smoke tests: under ``--benchmark-disable``
(the default in ``setup.cfg``) each timed function runs once. They never assert an absolute
time — only ratios with generous bounds, and facts (chunks delivered, connections opened,
upstream streams closed) — so a busy CI machine cannot fail them. The full figures come from
``scripts/benchmark_streaming_performance.py`` (see docs/PERFORMANCE.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import bench_support  # noqa: F401  (puts scripts/ on sys.path for the peers package)
import pytest
from peers.base import Peer
from peers.engine import EnginePeer
from peers.sequential import SequentialLoop

from backend_ai.simulator import SimulatorProcess


@pytest.fixture
def engine(simulator: SimulatorProcess) -> Iterator[EnginePeer]:
    with EnginePeer(simulator.base_url) as peer:
        yield peer  # type: ignore[misc]


@pytest.fixture
def sequential(simulator: SimulatorProcess) -> Iterator[Peer]:
    with SequentialLoop(simulator.base_url) as peer:
        yield peer
