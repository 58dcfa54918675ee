"""Logs every garbage collection that paused a Python process for 1 ms or more, to stderr.

A measurement aid, not part of the service: put this directory on ``PYTHONPATH`` of a process
(the load test passes the shell's environment to the server it spawns), and each such
collection writes one line, ``gc-pause pid=… generation=… ms=… collected=…``, to the server
log. A collection stops every thread of the process, so a long one delays every open stream.

    PYTHONPATH=scripts/gc_pause_log python scripts/load_test_streaming.py --spawn \\
        --server-log /tmp/server.log ...
    grep gc-pause /tmp/server.log
"""

import gc
import os
import sys
import time

_started: list[float] = []


def _on_collection(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
        return
    if not _started:
        return
    ms = (time.perf_counter() - _started.pop()) * 1000
    if ms >= 1.0:
        sys.stderr.write(
            f"gc-pause pid={os.getpid()} generation={info['generation']} ms={ms:.1f} "
            f"collected={info['collected']}\n"
        )


gc.callbacks.append(_on_collection)
