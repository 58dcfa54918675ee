"""The measuring upstreams (``burst_upstream``, ``paced_upstream``) as child processes.

Each is a script that binds the port it is given (0: any free one), announces it as one JSON
line on stdout (``{"port": N}``) and exits when its stdin closes, so a parent that dies, even
killed, leaves no server behind. ``UpstreamChild`` is the parent's side, ``serve_as_child``
the child's. The upstream runs in a process of its own so that its CPU is not the measured
process's.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

__all__ = ["UpstreamChild", "serve_as_child"]


class UpstreamChild:
    """``python SCRIPT --port=0 ARGS`` as a context manager; ``close()`` safe twice."""

    def __init__(self, script: Path, args: Sequence[str] = ()) -> None:
        self._command = [sys.executable, str(script), "--port=0", *args]
        self._name = script.stem.replace("_", " ")
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen(self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError(f"{self._name} did not start")
        self.port = int(json.loads(line)["port"])
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        """Stop the child and close its pipes; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve_as_child(serve: Callable[[Callable[[int], None]], None]) -> int:
    """Run ``serve(announce)`` as ``UpstreamChild`` expects; the exit status.

    ``serve`` calls ``announce(port)`` once it listens. Unless stdin is a terminal, a closed
    stdin ends the process; Ctrl-C ends it quietly.
    """

    def announce(port: int) -> None:
        print(json.dumps({"port": port}), flush=True)

    if not sys.stdin.isatty():

        def exit_on_eof() -> None:
            sys.stdin.read()
            os._exit(0)

        threading.Thread(target=exit_on_eof, daemon=True).start()
    with contextlib.suppress(KeyboardInterrupt):
        serve(announce)
    return 0
