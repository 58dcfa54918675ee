"""The percentile every report of the tests and scripts uses."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["percentile"]


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """Nearest-rank percentile, ``None`` for no values.

    No interpolation: every figure reported is one that was measured. The rank is
    ``ceil(fraction * n)``, the textbook definition (the engine's ``StreamStats`` uses the same).
    """
    ordered = sorted(values)
    if not ordered:
        return None
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]
