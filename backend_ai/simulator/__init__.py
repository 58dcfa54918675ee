"""An OpenAI-compatible upstream simulator: a real HTTP/1.1 + HTTP/2 server on loopback.

It speaks the chat-completions wire format (streaming and not) with controllable timing and
injected faults, and reports what it saw (connections, streams, disconnects) for tests. See
docs/SIMULATOR.md for the controls, faults and measured capacity.

Start it with ``with run_simulator(...) as sim:`` (a child process), ``backend-ai simulate``,
or the ``simulator`` pytest fixture.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import SimulatorApp, create_app
    from .process import SimulatorProcess, run_simulator
    from .profile import (
        DEFAULT_PROFILE,
        FAST_PROFILE,
        SIM_KEYS,
        Budget,
        SimKeyError,
        SimProfile,
    )
    from .server import ServerInfo, run_server
    from .tls import client_ssl_context

__all__ = [
    "DEFAULT_PROFILE",
    "FAST_PROFILE",
    "SIM_KEYS",
    "Budget",
    "ServerInfo",
    "SimKeyError",
    "SimProfile",
    "SimulatorApp",
    "SimulatorProcess",
    "client_ssl_context",
    "create_app",
    "run_server",
    "run_simulator",
]

# Each name is imported from its module on first use. The service checks requests' ``sim``
# controls with ``.profile`` alone; importing the server here (hypercorn, trustme, cryptography:
# about 50 ms) would land on the first request of every worker, before its first byte.
_HOMES = {
    "SimulatorApp": ".app",
    "create_app": ".app",
    "SimulatorProcess": ".process",
    "run_simulator": ".process",
    "DEFAULT_PROFILE": ".profile",
    "FAST_PROFILE": ".profile",
    "SIM_KEYS": ".profile",
    "Budget": ".profile",
    "SimKeyError": ".profile",
    "SimProfile": ".profile",
    "ServerInfo": ".server",
    "run_server": ".server",
    "client_ssl_context": ".tls",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
