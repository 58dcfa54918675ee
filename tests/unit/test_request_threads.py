"""``StreamSlots``: the moment a worker's last request thread takes a stream is reported."""

from __future__ import annotations

import logging

import pytest

from backend_ai.app.request_threads import WARN_EVERY_S, StreamSlots


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "backend_ai.app.request_threads" and r.levelno == logging.WARNING
    ]


def test_the_stream_that_takes_the_last_thread_is_reported_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    slots = StreamSlots(clock=clock)
    slots.set_threads(3)
    assert [slots.opened(), slots.opened()] == [False, False]
    assert _warnings(caplog) == []
    assert slots.opened() is True
    (message,) = _warnings(caplog)
    assert "all 3 request threads" in message
    assert "--threads" in message
    # A thread frees up and is taken again: full again, but the log is not flooded ...
    slots.closed()
    clock.now += WARN_EVERY_S / 2
    assert slots.opened() is True
    assert len(_warnings(caplog)) == 1
    # ... until a minute has passed.
    slots.closed()
    clock.now += WARN_EVERY_S
    assert slots.opened() is True
    assert len(_warnings(caplog)) == 2


def test_nothing_is_checked_where_the_thread_count_is_unknown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slots = StreamSlots()
    assert not any(slots.opened() for _ in range(500))
    assert _warnings(caplog) == []


def test_a_worker_without_threads_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        StreamSlots().set_threads(0)
