"""A bug in the run loop still ends the stream properly: every section once, then ``done``.

A bug cannot be produced on purpose through the public API, so the test wraps the real orderer
of the run (``manager.make_orderer``) in one whose ``push`` raises once, at the first section
end it is given: the consumer loop fails with a section's end booked but not sent. Everything
else is real: the simulator, the SDK, the transport, the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

import backend_ai.streaming.manager as manager_module
from backend_ai.streaming import RunOptions
from backend_ai.streaming.config import Mode
from backend_ai.streaming.events import ErrorCode, Event, SectionDone, SectionError
from backend_ai.streaming.ordering import Orderer

from .helpers import API_KEY, assert_well_formed, collect, ends, plain, section


class _FailsOnceAtAnEnd(Orderer):
    def __init__(self, real: Orderer) -> None:
        self.real = real
        self.failed = False

    def push(self, event: Event) -> Sequence[Event]:
        if not self.failed and isinstance(event, SectionDone | SectionError):
            self.failed = True
            raise RuntimeError(f"a bug holding {API_KEY}")
        return self.real.push(event)


@pytest.mark.parametrize("mode", list(Mode), ids=lambda mode: mode.value)
def test_a_failing_run_loop_ends_every_section_once_and_the_run_with_done(
    mode: Mode, make_manager, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_make_orderer = manager_module.make_orderer
    monkeypatch.setattr(
        manager_module,
        "make_orderer",
        lambda *args: _FailsOnceAtAnEnd(real_make_orderer(*args)),
    )
    configs = [
        section("fast", ttft_ms=5, itl_ms=2, tokens=3),
        section("slow", ttft_ms=5, itl_ms=10, tokens=60),
    ]
    manager = make_manager(options=RunOptions(mode=mode))
    with caplog.at_level(logging.DEBUG):
        events = plain(collect(manager.stream(configs)))

    done = assert_well_formed(events, ["fast", "slow"])
    finished = ends(events)
    # The first end to reach the orderer was lost with the failure: it is reported as what it
    # became, an internal error, never as a ``section_done`` the client did not get whole.
    assert all(isinstance(end, SectionError) for end in finished.values()), finished
    assert {end.code for end in finished.values()} == {ErrorCode.INTERNAL}
    assert set(done.failed) == {"fast", "slow"}
    assert done.completed == ()
    assert "RuntimeError" in caplog.text
    assert API_KEY not in caplog.text
