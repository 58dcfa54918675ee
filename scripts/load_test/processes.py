"""What ``--spawn`` starts: an upstream with a fixed profile and a server pointed at it.

The upstream is the simulator, or the lean paced upstream (``scripts/peers/paced_upstream.py``),
which sends the same profile at a fraction of the simulator's CPU per chunk, so that on a small
machine the server's CPU per chunk is the server's and not a starved upstream's. The server is
the service under gunicorn (``GunicornProcess``, as ``backend-ai serve`` runs it), or the
asyncio peer app (``scripts/peers/asgi_app.py``) under an ASGI server, for comparison.

``engine_tree`` serves the ``backend_ai`` package of another directory (a checkout or a ``git
archive`` of another commit), for A/B runs with the same client and upstream: the child gets
that directory first on ``PYTHONPATH`` and a working directory without a ``backend_ai`` of its
own (``python -m`` puts the working directory ahead of ``PYTHONPATH``).

The CPU each party used during a level is read from ``/proc`` (``tests/support/process.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import httpx

from backend_ai.app.gunicorn_process import GunicornProcess
from tests.support.process import free_port, machine_busy, process_tree_cpu_s
from tests.support.service import service_env

__all__ = [
    "SPAWN_PROFILE",
    "AsgiPeerServer",
    "Spawned",
    "cpu_snapshot",
    "cpu_usage",
    "engine_path",
    "spawn",
]

SCRIPTS = Path(__file__).resolve().parents[1]

#: Upstream profile ``--spawn`` gives the simulator: the simulator's realistic default, no jitter.
SPAWN_PROFILE = {"ttft_ms": 300.0, "itl_ms": 30.0, "tokens": 60, "jitter": 0.0}


class Server(Protocol):
    """What the load test needs of a spawned server: its process, whether it is still up."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...


class AsgiPeerServer:
    """``scripts/peers/asgi_app.py`` under an ASGI server, as a child process in its own session.

    ``stop()`` sends SIGTERM, then kills the whole session if it has not exited in 20 s.
    """

    def __init__(
        self,
        *,
        workers: int,
        log_level: str,
        asgi_server: str,
        env: Mapping[str, str],
        output: IO[str],
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._command = [
            sys.executable,
            str(SCRIPTS / "peers" / "asgi_app.py"),
            f"--port={self.port}",
            f"--workers={workers}",
            f"--log-level={log_level}",
            f"--server={asgi_server}",
        ]
        self._env = dict(env)
        self._output = output
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self, timeout: float = 60.0) -> AsgiPeerServer:
        """Start it and return once ``/health`` answers 200; ``RuntimeError`` otherwise."""
        proc = self._proc = subprocess.Popen(
            self._command,
            env=self._env,
            start_new_session=True,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode} before it was ready")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "health", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not healthy at {self.url} within {timeout:g} s")

    def stop(self) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode


@dataclass
class Spawned:
    url: str
    upstream_ttft_ms: float
    simulator: Any
    server: Server
    log_path: Path

    def check_alive(self) -> None:
        """Stop the test if the server exited: every later request would only be refused."""
        if self.server.returncode is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"server exited with code {self.server.returncode}:\n{tail}")


@contextlib.contextmanager
def spawn(
    *,
    server: str = "backend",
    workers: int = 2,
    threads: int = 32,
    profile: dict[str, Any] | None = None,
    log_level: str = "info",
    asgi_server: str = "auto",
    log_file: Path | None = None,
    upstream_http1: bool = False,
    upstream: str = "simulator",
    upstream_cpu: int | None = None,
    engine_tree: Path | None = None,
) -> Iterator[Spawned]:
    """An upstream with a fixed profile and a server pointed at it; both stopped at the end."""
    if server not in ("backend", "asgi-peer"):
        raise ValueError(f"unknown server {server!r}")
    profile = {**SPAWN_PROFILE, **(profile or {})}
    with (
        _spawn_upstream(upstream, profile, upstream_cpu) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        env = service_env(
            sim.base_url,
            api_key="sk-loadtest-dummy",
            # The shell's BACKEND_AI_* settings reach the server: a run can try one out.
            base={
                **os.environ,
                **(_engine_tree_env(engine_tree) if engine_tree is not None else {}),
            },
            # The upstream speaks h2c; --upstream-http1 compares the HTTP/1.1 pool.
            BACKEND_AI_HTTP_HTTP2="0" if upstream_http1 else "1",
            BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE="0" if upstream_http1 else "1",
            BACKEND_AI_HISTORY_DB=str(Path(tmp) / "history.sqlite3"),
        )
        log_path = log_file or Path(tmp) / "server.log"
        with log_path.open("w") as log:
            running: GunicornProcess | AsgiPeerServer
            if server == "backend":
                running = GunicornProcess(
                    workers=workers,
                    threads=threads,
                    log_level=log_level,
                    env=env,
                    output=log,
                    # From elsewhere than a checkout, --engine-tree's package is the one imported.
                    cwd=tmp if engine_tree is not None else None,
                )
            else:
                running = AsgiPeerServer(
                    workers=workers,
                    log_level=log_level,
                    asgi_server=asgi_server,
                    env=env,
                    output=log,
                )
            try:
                running.start()
            except Exception:
                log.flush()
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            assert running.url is not None
            try:
                yield Spawned(
                    url=running.url.rstrip("/"),
                    upstream_ttft_ms=float(profile["ttft_ms"]),
                    simulator=sim,
                    server=running,
                    log_path=log_path,
                )
            finally:
                code = running.stop()
                log.flush()
                if code not in (0, -signal.SIGTERM):
                    print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)


@contextlib.contextmanager
def _spawn_upstream(kind: str, profile: dict[str, Any], cpu: int | None) -> Iterator[Any]:
    """The simulator, or the lean paced upstream; either has ``base_url``, ``pid``, ``reset()``
    and ``stats()``."""
    if kind == "paced":
        from peers.paced_upstream import PacedUpstream

        with PacedUpstream(
            ttft_ms=float(profile["ttft_ms"]),
            itl_ms=float(profile["itl_ms"]),
            tokens=int(profile["tokens"]),
            jitter=float(profile["jitter"]),
            cpu=cpu,
        ) as paced:
            yield paced
        return
    from backend_ai.simulator import SimulatorProcess

    with SimulatorProcess(profile="default", **profile) as sim:
        if cpu is not None:
            os.sched_setaffinity(sim.pid, {cpu})
        yield sim


def _engine_tree_env(tree: Path) -> dict[str, str]:
    """Environment that makes a child Python import ``backend_ai`` from ``tree`` first."""
    tree = tree.resolve()
    if not (tree / "backend_ai" / "__init__.py").is_file():
        raise SystemExit(f"--engine-tree: no backend_ai package in {tree}")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}


def engine_path(tree: Path | None) -> str:
    """Where the spawned server's ``backend_ai`` comes from (recorded with the results)."""
    env = {**os.environ, **(_engine_tree_env(tree) if tree is not None else {})}
    out = subprocess.run(
        [sys.executable, "-c", "import backend_ai; print(backend_ai.__path__[0])"],
        env=env,
        cwd=tempfile.gettempdir() if tree is not None else None,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


# -- where the CPU went ------------------------------------------------------------------------
def cpu_snapshot(spawned: Spawned | None) -> dict[str, float]:
    """CPU seconds so far of the machine and, when spawned, of the server and the upstream."""
    snapshot = {}
    with contextlib.suppress(OSError, ValueError):
        snapshot["machine_busy"], snapshot["machine_total"] = machine_busy()
        if spawned is not None:
            snapshot["server"] = process_tree_cpu_s(spawned.server.pid)
            snapshot["simulator"] = process_tree_cpu_s(spawned.simulator.pid)
    return snapshot


def cpu_usage(
    before: dict[str, float], after: dict[str, float], wall: float, client_cpu: float
) -> dict[str, float]:
    """Percent of one core used during the run by each party (and the machine as a whole)."""
    usage = {"client": round(100 * client_cpu / wall, 1)}
    for key in ("server", "simulator"):
        if key in before and key in after:
            usage[key] = round(100 * (after[key] - before[key]) / wall, 1)
    if "machine_busy" in before and "machine_busy" in after:
        usage["machine"] = round(100 * (after["machine_busy"] - before["machine_busy"]) / wall, 1)
        usage["machine_capacity"] = 100.0 * (os.cpu_count() or 1)
        ours = sum(usage.get(k, 0.0) for k in ("client", "server", "simulator"))
        # Anything else running on the machine at the same time (other test runs, say).
        usage["others"] = round(max(0.0, usage["machine"] - ours), 1)
    return usage
