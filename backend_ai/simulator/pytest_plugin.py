"""pytest fixtures for tests that need an upstream: one simulator per session, reset per test.

The servers are session-scoped (a child process starts in ~0.5 s) and started only when a test
asks for them; each test gets them reset (stats, fault counters, defaults, budget), so tests
cannot see each other's traffic or configuration.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .process import SimulatorProcess, run_simulator

__all__ = ["simulator", "simulator_server", "simulator_tls", "simulator_tls_server"]

FAST_KEYS: dict[str, Any] = {"ttft_ms": 20, "itl_ms": 2, "tokens": 20, "jitter": 0}


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[SimulatorProcess]:
    """Cleartext simulator (HTTP/1.1 and h2c) with the fast profile, for the whole session."""
    with run_simulator(tls=False, **FAST_KEYS) as sim:
        yield sim


@pytest.fixture
def simulator(simulator_server: SimulatorProcess) -> SimulatorProcess:
    """The session's cleartext simulator, reset before this test."""
    simulator_server.reset()
    return simulator_server


@pytest.fixture(scope="session")
def simulator_tls_server() -> Iterator[SimulatorProcess]:
    """TLS simulator (ALPN h2, http/1.1) with the fast profile, for the whole session."""
    with run_simulator(tls=True, **FAST_KEYS) as sim:
        yield sim


@pytest.fixture
def simulator_tls(simulator_tls_server: SimulatorProcess) -> SimulatorProcess:
    """The session's TLS simulator, reset before this test."""
    simulator_tls_server.reset()
    return simulator_tls_server
