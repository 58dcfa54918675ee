"""The benchmark's parts, each a function of a ``Bench`` that returns its figures.

``SCENARIOS`` maps the names ``--only`` takes (and the keys of the JSON results) to them, in
the order a full run goes through them; the timeline picture (``timeline``) is apart because
it writes a file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..session import Bench
from .cpu import merge_cost
from .fanout import fanout
from .http import http
from .latency import service, ttfb
from .peer_comparison import peers
from .timeline import timeline

__all__ = ["SCENARIOS", "timeline"]

SCENARIOS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "fanout": fanout,
    "ttfb": ttfb,
    "service": service,
    "merge_cost": merge_cost,
    "http": http,
    "peers": peers,
}
