"""The package is built on the public APIs of httpx2, httpcore2, h2 and h11 only.

Private names of those libraries change between their patch releases; code that reaches into
them breaks silently on an upgrade. This test reads every module of ``backend_ai`` and fails
on any use of a known private name or pattern.
"""

from __future__ import annotations

import re
from pathlib import Path

import backend_ai

PACKAGE = Path(backend_ai.__file__).resolve().parent

#: Patterns of private use: module-private imports, the pool and connection internals the
#: httpx2/httpcore2 stack keeps, h2's state-machine tables and buffers, class swaps.
FORBIDDEN = {
    # ``httpx2``/``httpcore2`` (what the package is built on) and the ``httpx``/``httpcore``
    # they were forked from.
    "httpcore private module": re.compile(r"\bhttpcore2?\._"),
    "httpx private module": re.compile(r"\bhttpx2?\._"),
    "h2 private name": re.compile(r"\bh2\.\w+\._"),
    "h11 private name": re.compile(r"\bh11\._"),
    # Our own objects may keep a ``self._pool``; another object's ``._pool`` is a library's.
    "a transport's pool": re.compile(r"(?<!self)\._pool\b"),
    "h2 state-machine table": re.compile(r"_transitions\b"),
    "h2 connection internals": re.compile(
        r"\._(h2_state|events|write_lock|read_lock|network_stream|"
        r"inbound_flow_control_window_manager|data_to_send|frame_dispatch_table|"
        r"closed_streams|header_frames|stream_id_allocator)\b"
    ),
    "httpcore connection internals": re.compile(
        r"\._(receive_events|response_closed|send_request_headers|close_connections|"
        r"connection_terminated|request_count)\b"
    ),
    "class swap": re.compile(r"\.__class__\s*="),
}


def _hits() -> list[str]:
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for what, pattern in FORBIDDEN.items():
                if pattern.search(line):
                    hits.append(f"{path.relative_to(PACKAGE)}:{number}: {what}: {line.strip()}")
    return hits


def test_no_private_names_of_the_http_stack() -> None:
    assert _hits() == []


def test_the_patterns_catch_what_they_are_for() -> None:
    samples = [
        "from httpcore._sync.http2 import HTTP2Connection",
        "from httpcore2._sync.http2 import HTTP2Connection",
        "from httpx2._transports.default import ResponseStream",
        "response = httpx2._models.Response",
        "pool = transport._pool",
        "**H2ConnectionStateMachine._transitions,",
        "self._h2_state.receive_data(data)",
        "self._pool.__class__ = Pool",
    ]
    for sample in samples:
        assert any(p.search(sample) for p in FORBIDDEN.values()), sample
