"""Process helpers of the tests and scripts: a free loopback port, a process tree read from
``/proc`` (its members, and the CPU seconds they have used), and the machine's busy time."""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["descendants", "free_port", "machine_busy", "process_tree_cpu_s"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _processes() -> dict[int, tuple[int, float]]:
    """Every live process: its parent's pid and its CPU seconds (user + system)."""
    table: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (
            int(fields[1]),
            (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS,
        )
    return table


def _tree(root: int, table: dict[int, tuple[int, float]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    return _tree(pid, _processes())


def process_tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and all its live descendants."""
    table = _processes()
    return sum(table[pid][1] for pid in _tree(root, table) | {root} if pid in table)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, every core, from ``/proc/stat``.

    Two readings around a measurement tell how much else ran on the machine meanwhile.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / _CLOCK_TICKS, total / _CLOCK_TICKS
