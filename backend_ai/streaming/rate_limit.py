"""Reading rate-limit answers: how long the upstream asks us to wait.

Precedence follows the OpenAI SDK: ``retry-after-ms`` (milliseconds), then ``Retry-After`` as
seconds, then ``Retry-After`` as an HTTP date. Waits are clamped to ``[0, cap]`` so a hostile or
broken header can neither stall a request forever nor make it spin.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

__all__ = ["DEFAULT_RETRY_WAIT_S", "parse_retry_after", "retry_wait_s"]

#: Wait used when a 429 carries no usable header.
DEFAULT_RETRY_WAIT_S = 1.0


def _finite_non_negative(value: float) -> float | None:
    return value if math.isfinite(value) and value >= 0 else None


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait according to the headers, or None when they say nothing usable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            seconds = _finite_non_negative(float(raw_ms) / 1000)
        except ValueError:
            seconds = None
        if seconds is not None:
            return seconds
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return _finite_non_negative(float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def retry_wait_s(headers: Mapping[str, str] | None, *, cap_s: float) -> float:
    """The wait to honour for one 429: the header's value (or a default), at most ``cap_s``."""
    parsed = parse_retry_after(headers) if headers is not None else None
    wait = DEFAULT_RETRY_WAIT_S if parsed is None else parsed
    return min(wait, cap_s)
