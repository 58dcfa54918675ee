"""An OpenAI-compatible upstream simulator: a real HTTP/1.1 + HTTP/2 server on loopback.

It speaks the chat-completions wire format (streaming and not) with controllable timing and
injected faults, and reports what it saw (connections, streams, disconnects) for tests. See
docs/SIMULATOR.md for the controls, faults and measured capacity.

Start it with ``with run_simulator(...) as sim:`` (a child process), ``backend-ai simulate``,
or the ``simulator`` pytest fixture.
"""

from .app import SimulatorApp, create_app
from .process import SimulatorProcess, run_simulator
from .profile import DEFAULT_PROFILE, FAST_PROFILE, SIM_KEYS, Budget, SimKeyError, SimProfile
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
