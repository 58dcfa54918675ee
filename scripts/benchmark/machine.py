"""What the benchmark ran on, and how busy the machine was meanwhile (recorded with the results:
a figure from a shared machine is read with the load it ran under)."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path
from typing import Any

from tests.support.process import machine_busy, process_tree_cpu_s

__all__ = ["load_snapshot", "load_usage", "machine"]


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("openai", "httpx", "httpcore", "h2", "langchain-openai", "langchain-core"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    info["packages"] = versions
    return info


def load_snapshot(sim_pid: int) -> dict[str, float]:
    """CPU seconds so far: the machine, this process, the simulator (for ``machine_load``)."""
    snapshot = {"wall": time.perf_counter(), "self": time.process_time()}
    with contextlib.suppress(OSError, ValueError):
        snapshot["machine"] = machine_busy()[0]
        snapshot["simulator"] = process_tree_cpu_s(sim_pid)
    return snapshot


def load_usage(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Average CPU use during the run, in % of one core: ours, the simulator's, everyone else's.

    The machine is shared; a large ``others`` figure means the run competed for the cores.
    """
    wall = after["wall"] - before["wall"]
    usage: dict[str, Any] = {"wall_s": round(wall, 1)}
    for key in ("self", "simulator", "machine"):
        if key in before and key in after:
            usage[f"{key}_percent"] = round(100 * (after[key] - before[key]) / wall, 1)
    if "machine_percent" in usage:
        ours = usage["self_percent"] + usage.get("simulator_percent", 0.0)
        usage["others_percent"] = round(max(0.0, usage["machine_percent"] - ours), 1)
    usage["loadavg"] = os.getloadavg()
    return usage
