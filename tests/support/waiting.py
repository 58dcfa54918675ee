"""Waiting for a condition another thread or process brings about, with a bound."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["wait_until"]


def wait_until(
    predicate: Callable[[], Any], timeout: float = 5.0, what: str = "", *, interval: float = 0.01
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that; AssertionError
    naming ``what`` (or the predicate) once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what or predicate}")
        time.sleep(interval)
