"""The engine against an HTTP/2 upstream that misbehaves: every run ends, and no text is lost.

Each scenario scripts ``HostileServer`` (``hostile_server.py``) frame by frame, then runs three
sections on one pooled connection through the public engine API in a child process
(``hostile_runner.py``) under a deadline, so a hang fails the test instead of wedging pytest.
Every run is checked for the invariants of any run (it ends, ends with ``done``, each section
ends once, no ``internal`` error code, no ERROR log, and a section is ``section_done`` only
with exactly the text the server sent for it) and then for what the scenario adds:

| scenario (3 sections, one connection) | expected outcome |
| --- | --- |
| SETTINGS: MAX_CONCURRENT_STREAMS 3 -> 1 | open streams finish; next run works |
| same, then a cancel from another thread | the cancel returns; the run ends |
| WINDOW_UPDATE overflow + others' DATA, one read | unfinished sections error; new connection |
| HEADERS after END_STREAM + others' DATA, one read | same as above |
| upload waits for window, PINGs, cancel | cancel returns; the pool's next run works |
| upload never gets window, no cancel | every section ``timeout``, no hang |
| whole response, then RST_STREAM(NO_ERROR), upload waiting | every section done, text kept |
| GOAWAY(last=1) after streams 3, 5 delivered data | 1 done; 3, 5 connection/upstream error |
| oversized header block on one stream | that section alone fails (clean code) |
| RST_STREAM(REFUSED_STREAM) before any data | retried; every section done |
| every stream on a connection timed out | connection retired; next run on a new one |
| GOAWAY(NO_ERROR) covering 2 of 3 streams | all done; third retried on a new connection |
| TCP connection dropped mid-stream | every section errors, none done |
| peer silent (PING unanswered), long read timeout | every section errors within 20 s |
| DATA on a stream already closed | clean code; done only with exact text |
| cancel before response headers, another run beside | RST_STREAM(CANCEL) at once; other run done |
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.errors
import h2.settings
import pytest
from hostile_runner import ALONGSIDE, prompt_of
from hostile_server import (
    MAX_WINDOW,
    HostileServer,
    Peer,
    Script,
    data_frame,
    goaway_frame,
    headers_frame,
    sse_chunk,
    window_update_frame,
)

RUNNER = Path(__file__).with_name("hostile_runner.py")
SECTIONS = ["summary", "symbols", "advice"]
#: A run against a well-behaved upstream ends well within this; a hung one never does.
RUN_TIMEOUT_S = 15.0


@dataclass
class RunResult:
    raw: dict[str, Any]

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.raw["events"]

    def ends(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = {}
        for event in self.events:
            if event["type"] in ("section_done", "error"):
                assert event["section"] not in result, f"{event['section']} ended twice"
                result[event["section"]] = event
        return result

    def text(self, section: str) -> str:
        return "".join(
            e["content"] for e in self.events if e["type"] == "chunk" and e["section"] == section
        )

    def done(self) -> set[str]:
        return {name for name, end in self.ends().items() if end["type"] == "section_done"}

    def codes(self) -> dict[str, str]:
        return {name: end["code"] for name, end in self.ends().items() if end["type"] == "error"}


def run_engine(
    server: HostileServer,
    runs: list[dict[str, Any]],
    *,
    pool: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> list[RunResult]:
    """Run ``runs`` one after another on one pooled client in a child process."""
    for spec in runs:
        spec.setdefault("sections", SECTIONS)
        spec.setdefault("run_timeout_s", RUN_TIMEOUT_S)
        if "alongside" in spec:
            spec["alongside"].setdefault("sections", SECTIONS)
    plan = {
        "base_url": server.base_url,
        "pool": {"timeout_s": 10.0, "connect_timeout_s": 5.0, **(pool or {})},
        "options": {"deadline_s": 60.0, "stall_timeout_s": 30.0, "heartbeat_s": None}
        | (options or {}),
        "runs": runs,
    }
    limit = sum(spec["run_timeout_s"] + spec.get("cancel_timeout_s", 5.0) for spec in runs) + 30
    try:
        out = subprocess.run(
            [sys.executable, str(RUNNER), json.dumps(plan)],
            capture_output=True,
            text=True,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the engine's process did not finish within {limit:.0f} s")
    results = [RunResult(json.loads(line)) for line in out.stdout.splitlines() if line.strip()]
    assert results, f"the engine's process printed nothing; stderr:\n{out.stderr[-3000:]}"
    for result in results:
        assert result.raw["ended"], (
            f"a run did not end within its deadline (hang); events so far: {result.events}"
        )
        assert result.raw.get("alongside", {"ended": True})["ended"], (
            f"the run alongside did not end (hang): {result.raw['alongside']['events']}"
        )
    assert len(results) == len(runs), f"only {len(results)} of {len(runs)} runs reported"
    assert server.errors == [], server.errors
    return results


def check_invariants(result: RunResult, server: HostileServer) -> None:
    """What holds for every run, whatever the upstream did; every violation is reported."""
    events = result.events
    problems = []
    if events[0]["type"] != "start":
        problems.append(f"first event is {events[0]['type']!r}")
    if events[-1]["type"] != "done":
        problems.append(f"last event is {events[-1]['type']!r}")
    ends = result.ends()
    started = {e["section"] for e in events if e["type"] == "section_start"}
    if set(ends) != started:
        problems.append(f"sections started {sorted(started)}, ended {sorted(ends)}")
    for name, end in ends.items():
        if end["type"] == "section_done":
            sent = server.finished_text(prompt_of(name, result.raw["run"]))
            if result.text(name) != sent:
                problems.append(f"{name} done with {result.text(name)!r}; the server sent {sent!r}")
        elif end["code"] == "internal":
            problems.append(f"{name} failed as 'internal': {end['message']}")
    problems.extend(f"ERROR log: {line}" for line in result.raw.get("error_logs", ()))
    assert not problems, f"run {result.raw['run']}:\n" + "\n".join(problems)


def each(peer: Peer, sids: list[int], text: str) -> None:
    for sid in sids:
        peer.chunk(sid, f"{peer.prompt(sid)} {text} ")


def start_three(peer: Peer) -> list[int]:
    """Wait for the three sections' requests, answer each with headers and one chunk."""
    sids = peer.wait_requests(3)
    for sid in sids:
        peer.respond(sid)
    each(peer, sids, "one")
    peer.flush()
    return sids


@pytest.fixture
def hostile() -> Iterator[list[HostileServer]]:
    servers: list[HostileServer] = []
    yield servers
    for server in servers:
        server.close()


def serve(servers: list[HostileServer], script: Script, **kwargs: Any) -> HostileServer:
    server = HostileServer(script, **kwargs)
    servers.append(server)
    return server


# -- SETTINGS -----------------------------------------------------------------------------------


def _lower_concurrency(peer: Peer, *, finish: bool) -> None:
    if peer.index > 0:
        return peer.serve_forever()
    sids = start_three(peer)
    peer.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    peer.flush()
    # A wedged client never acknowledges; the run's own deadline tells.
    with contextlib.suppress(AssertionError):
        peer.wait(lambda: peer.settings_acked >= 2, timeout=2, what="SETTINGS ACK")
    if not finish:
        return peer.serve_forever()
    each(peer, sids, "two")
    for sid in sids:
        peer.finish(sid)
    peer.flush()
    peer.serve_forever()


@pytest.mark.timeout(90)
def test_lower_max_concurrent_streams_lets_open_streams_finish(hostile) -> None:
    server = serve(hostile, lambda p: _lower_concurrency(p, finish=True))
    first, second = run_engine(server, [{}, {}])
    for result in (first, second):
        check_invariants(result, server)
        assert result.done() == set(SECTIONS)


@pytest.mark.timeout(90)
def test_lower_max_concurrent_streams_then_cancel_from_another_thread_returns(hostile) -> None:
    server = serve(hostile, lambda p: _lower_concurrency(p, finish=False))
    (result,) = run_engine(server, [{"cancel_after_s": 1.5}])
    assert result.raw["cancel_returned"], "the cancel from another thread never returned"
    check_invariants(result, server)
    assert result.done() == set()
    assert result.events[-1]["cancelled"] is True


# -- connection errors in the middle of other streams' data -------------------------------------


def _connection_error_with_data(peer: Peer, *, frame: str) -> None:
    """Streams get a chunk; then one read carries more DATA and a connection error; then the
    server goes on as if nothing happened (which a client must not believe)."""
    if peer.index > 0:
        return peer.serve_forever()
    sids = start_three(peer)
    if frame == "window_update":
        unfinished = sids
        bad = window_update_frame(0, MAX_WINDOW)
    else:  # HEADERS on a stream after its END_STREAM
        first, unfinished = sids[0], sids[1:]
        peer.server.notes["finished"] = peer.section(first)
        peer.chunk(first, f"{peer.prompt(first)} two")
        peer.finish(first)
        peer.flush()
        time.sleep(0.3)
        bad = headers_frame(first, [(":status", "200"), ("content-type", "text/event-stream")])
    batch = b"".join(peer.raw_chunk(sid, f"{peer.prompt(sid)} two ") for sid in unfinished)
    peer.flush(batch + bad)
    time.sleep(0.3)
    peer.flush(b"".join(peer.raw_chunk(sid, "three") + peer.raw_finish(sid) for sid in unfinished))
    peer.idle()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("frame", ["window_update", "headers_after_end_stream"])
def test_connection_error_in_one_read_ends_every_open_stream_and_retires_it(
    hostile, frame: str
) -> None:
    server = serve(hostile, lambda p: _connection_error_with_data(p, frame=frame))
    first, second = run_engine(server, [{}, {}])
    check_invariants(first, server)
    finished = server.notes.get("finished")
    expected_done = {finished} if finished else set()
    assert first.done() <= expected_done, "a section was reported done after a connection error"
    assert not any("three" in first.text(name) for name in SECTIONS), "data after the error"
    assert set(first.codes()) == set(SECTIONS) - first.done()
    check_invariants(second, server)
    assert second.done() == set(SECTIONS)
    assert server.connections == 2, "the next run went to the connection that had failed"


# -- flow control: the upload waits for window ---------------------------------------------------


#: Makes a request body larger than the default 65,535-byte stream window.
BIG_PROMPT = 100_000


def _hold_uploads(peer: Peer) -> None:
    """Uploads stop at their stream window: the server never gives request bytes back, but
    opens the connection window wide so every stream gets as far as its own window."""
    peer.return_window = False
    peer.conn.increment_flow_control_window(1 << 22)
    peer.flush()


def _ping_while_upload_waits(peer: Peer) -> None:
    if peer.index > 0:
        return peer.serve_forever()
    _hold_uploads(peer)
    held = set(peer.wait_requests(3, complete=False))
    next_ping = 0.0
    opened: set[int] = set()
    while not peer.closed and not peer.server.stopping:
        if time.monotonic() >= next_ping:
            peer.conn.ping(b"hostile!")
            peer.flush()
            next_ping = time.monotonic() + 0.1
        peer.pump()
        for sid, request in sorted(peer.requests.items()):
            if sid in held:
                continue
            if sid not in opened:  # later runs' streams get their window and an answer
                opened.add(sid)
                peer.conn.increment_flow_control_window(1 << 20, stream_id=sid)
                peer.flush()
            if request.complete:
                held.add(sid)
                peer.serve(sid, [f"{request.prompt} one ", f"{request.prompt} two"])


@pytest.mark.timeout(90)
def test_cancel_while_the_upload_waits_for_window_under_pings_returns(hostile) -> None:
    server = serve(hostile, _ping_while_upload_waits)
    first, second = run_engine(
        server, [{"cancel_after_s": 1.0, "prompt_padding": BIG_PROMPT}, {}], pool={"timeout_s": 5.0}
    )
    assert first.raw["cancel_returned"], "the cancel from another thread never returned"
    check_invariants(first, server)
    assert first.done() == set()
    check_invariants(second, server)
    assert second.done() == set(SECTIONS)


@pytest.mark.timeout(90)
def test_an_upload_that_never_gets_window_times_out(hostile) -> None:
    server = serve(hostile, _ping_while_upload_waits)
    (result,) = run_engine(
        server,
        [{"prompt_padding": BIG_PROMPT}],
        pool={"timeout_s": 2.0},
        options={"stall_timeout_s": None, "deadline_s": None},
    )
    check_invariants(result, server)
    assert result.codes() == dict.fromkeys(SECTIONS, "timeout")


def _complete_then_reset(peer: Peer) -> None:
    if peer.index > 0:
        return peer.serve_forever()
    _hold_uploads(peer)
    sids = peer.wait_requests(3, complete=False)
    peer.wait(lambda: all(peer.requests[sid].prompt for sid in sids), what="the prompts")
    time.sleep(0.2)  # the rest of each request body is now waiting for window
    for sid in sids:
        assert not peer.requests[sid].complete, "the upload was meant to wait for window"
        peer.serve(sid, [f"{peer.prompt(sid)}: the whole answer"])
        peer.conn.reset_stream(sid, h2.errors.ErrorCodes.NO_ERROR)
    peer.flush()
    peer.idle()


@pytest.mark.timeout(90)
def test_a_complete_response_then_rst_stream_no_error_is_kept(hostile) -> None:
    server = serve(hostile, _complete_then_reset)
    (result,) = run_engine(server, [{"prompt_padding": BIG_PROMPT}])
    check_invariants(result, server)
    assert result.done() == set(SECTIONS)


# -- GOAWAY --------------------------------------------------------------------------------------


def _goaway_below_delivered_streams(peer: Peer) -> None:
    if peer.index > 0:
        return peer.serve_forever()
    sids = start_three(peer)
    first = sids[0]
    peer.server.notes["covered"] = peer.section(first)
    time.sleep(0.3)  # the chunks reach the sections before the GOAWAY disowns two of them
    peer.flush(goaway_frame(first, h2.errors.ErrorCodes.NO_ERROR))
    time.sleep(0.2)
    peer.flush(peer.raw_chunk(first, "two") + peer.raw_finish(first))
    peer.idle()


@pytest.mark.timeout(90)
def test_goaway_below_streams_that_delivered_data_fails_them_cleanly(hostile) -> None:
    server = serve(hostile, _goaway_below_delivered_streams)
    (result,) = run_engine(server, [{}])
    check_invariants(result, server)
    covered = server.notes["covered"]
    assert result.done() == {covered}
    codes = result.codes()
    assert set(codes) == set(SECTIONS) - {covered}
    assert set(codes.values()) <= {"connection_error", "upstream_error"}, codes
    for name in set(SECTIONS) - {covered}:
        assert result.ends()[name]["chunks"] == 1, "the chunk delivered before GOAWAY counts"


def _graceful_goaway(peer: Peer) -> None:
    if peer.index > 0:
        return peer.serve_forever()
    sids = peer.wait_requests(3)
    covered, uncovered = sids[:2], sids[2]
    for sid in covered:
        peer.respond(sid)
    each(peer, covered, "one")
    peer.flush(goaway_frame(covered[-1], h2.errors.ErrorCodes.NO_ERROR))
    time.sleep(0.2)
    peer.flush(b"".join(peer.raw_chunk(sid, "two") + peer.raw_finish(sid) for sid in covered))
    del uncovered  # never processed: the client must send it again elsewhere
    peer.idle()


@pytest.mark.timeout(90)
def test_graceful_goaway_finishes_covered_streams_and_retries_the_rest(hostile) -> None:
    server = serve(hostile, _graceful_goaway)
    (result,) = run_engine(server, [{}])
    check_invariants(result, server)
    assert result.done() == set(SECTIONS)
    assert server.connections == 2
    assert sorted(server.requested(prompt_of(n)) for n in SECTIONS) == [1, 1, 2]


# -- resets, headers, closed streams ------------------------------------------------------------


def _oversized_headers(peer: Peer) -> None:
    if peer.index > 0:
        return peer.serve_forever()
    sids = peer.wait_requests(3)
    big = sids[1]
    peer.server.notes["big"] = peer.section(big)
    # Over 64 KiB; not much more: hpack's pure-Python Huffman coder takes time quadratic in a
    # value's length (15 s for 300 kB here), which would look like an upstream that never answers.
    peer.conn.send_headers(
        big, [(":status", "200"), ("content-type", "text/event-stream"), ("x-big", "x" * 100_000)]
    )
    peer.flush()
    for sid in (sids[0], sids[2]):
        peer.serve(sid, [f"{peer.prompt(sid)} one ", "two"])
    peer.idle()


@pytest.mark.timeout(90)
def test_an_oversized_header_block_fails_that_section_alone(hostile) -> None:
    server = serve(hostile, _oversized_headers)
    (result,) = run_engine(server, [{}])
    check_invariants(result, server)
    big = server.notes["big"]
    assert result.done() == set(SECTIONS) - {big}
    assert set(result.codes()) == {big}


def _refuse_one(peer: Peer) -> None:
    if peer.index > 0:
        return peer.serve_forever()
    sids = peer.wait_requests(3)
    peer.conn.reset_stream(sids[1], h2.errors.ErrorCodes.REFUSED_STREAM)
    peer.flush()
    for sid in (sids[0], sids[2]):
        peer.serve(sid, [f"{peer.prompt(sid)} one ", "two"])
    peer.serve_forever()


@pytest.mark.timeout(90)
def test_refused_stream_is_retried(hostile) -> None:
    server = serve(hostile, _refuse_one)
    (result,) = run_engine(server, [{}])
    check_invariants(result, server)
    assert result.done() == set(SECTIONS)
    assert sorted(server.requested(prompt_of(n)) for n in SECTIONS) == [1, 1, 2]


def _silent_after_first_chunk(peer: Peer) -> None:
    if peer.index > 0:
        return peer.serve_forever()
    start_three(peer)
    peer.idle()


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "timer",
    [
        "read_timeout",
        "stall_timeout",
    ],
)
def test_a_connection_whose_streams_all_timed_out_is_retired(hostile, timer: str) -> None:
    """Whether the transport's read timeout or the engine's stall timeout (which cancels the
    streams) gave up on them, a connection that answered none of its streams is not reused."""
    server = serve(hostile, _silent_after_first_chunk)
    if timer == "read_timeout":
        pool, options = {"timeout_s": 1.5}, {"stall_timeout_s": None, "deadline_s": None}
    else:
        pool, options = {"timeout_s": 30.0}, {"stall_timeout_s": 1.5, "deadline_s": None}
    first, second = run_engine(server, [{}, {}], pool=pool, options=options)
    check_invariants(first, server)
    assert first.codes() == dict.fromkeys(SECTIONS, "timeout")
    check_invariants(second, server)
    assert second.done() == set(SECTIONS)
    assert server.connections == 2, "the next run went back to the connection that timed out"


def _drop_mid_stream(peer: Peer) -> None:
    if peer.index > 0:
        return peer.serve_forever()
    start_three(peer)
    time.sleep(0.2)
    peer.drop()


@pytest.mark.timeout(90)
def test_a_dropped_tcp_connection_fails_every_stream(hostile) -> None:
    server = serve(hostile, _drop_mid_stream)
    first, second = run_engine(server, [{}, {}])
    check_invariants(first, server)
    assert first.done() == set()
    assert set(first.codes().values()) <= {"connection_error", "upstream_error"}, first.codes()
    check_invariants(second, server)
    assert second.done() == set(SECTIONS)


def _unresponsive(peer: Peer) -> None:
    if peer.index > 0:
        return peer.serve_forever()
    start_three(peer)
    peer.black_hole()


@pytest.mark.timeout(120)
def test_an_unanswered_ping_closes_a_dead_connection(hostile) -> None:
    """Read timeout and stall timeout far away: only a PING that gets no answer can tell the
    connection is dead."""
    server = serve(hostile, _unresponsive)
    (result,) = run_engine(
        server,
        [{"run_timeout_s": 20.0}],
        pool={"timeout_s": 60.0},
        options={"stall_timeout_s": None, "deadline_s": None},
    )
    check_invariants(result, server)
    assert result.done() == set()
    assert set(result.codes().values()) <= {"connection_error", "timeout"}, result.codes()


def _data_on_closed_stream(peer: Peer) -> None:
    if peer.index > 0:
        return peer.serve_forever()
    sids = start_three(peer)
    first, rest = sids[0], sids[1:]
    peer.server.notes["finished"] = peer.section(first)
    peer.finish(first)
    peer.flush()
    time.sleep(0.2)
    late = data_frame(first, sse_chunk("after the end"))
    peer.flush(b"".join(peer.raw_chunk(sid, "two ") for sid in rest) + late)
    time.sleep(0.2)
    peer.flush(b"".join(peer.raw_finish(sid) for sid in rest))
    peer.serve_forever()


@pytest.mark.timeout(90)
def test_data_on_a_closed_stream_is_handled_cleanly(hostile) -> None:
    server = serve(hostile, _data_on_closed_stream)
    first, second = run_engine(server, [{}, {}])
    check_invariants(first, server)
    assert server.notes["finished"] in first.done()
    check_invariants(second, server)
    assert second.done() == set(SECTIONS)


# -- cancellation ------------------------------------------------------------------------------


def _cancel_beside_another_run(peer: Peer) -> None:
    """Two runs share the connection: the first gets no response headers at all (it is
    cancelled while waiting for them); the other streams ten chunks, 100 ms apart."""
    if peer.index > 0:
        return peer.serve_forever()
    sids = peer.wait_requests(6)
    streaming = [sid for sid in sids if peer.prompt(sid).endswith(f"r{ALONGSIDE}")]
    for sid in streaming:
        peer.respond(sid)
    peer.flush()
    for i in range(10):
        each(peer, streaming, str(i))
        peer.flush()
        peer.idle_for(0.1)
    for sid in streaming:
        peer.finish(sid)
    peer.flush()
    peer.serve_forever()


@pytest.mark.timeout(90)
def test_a_cancel_before_headers_resets_its_streams_and_spares_the_connection(hostile) -> None:
    """RST_STREAM(CANCEL) for every stream of the cancelled run, long before any timeout; the
    run beside it on the same connection streams on to the end."""
    server = serve(hostile, _cancel_beside_another_run)
    (result,) = run_engine(server, [{"cancel_after_s": 0.4, "alongside": {}}])
    assert result.raw["cancel_returned"]
    check_invariants(result, server)
    assert result.done() == set()
    assert set(result.codes()) == set(SECTIONS)
    beside = RunResult(result.raw["alongside"])
    check_invariants(beside, server)
    assert beside.done() == set(SECTIONS)
    assert server.connections == 1, "the cancel cost the other run its connection"
    (peer,) = server.peers
    cancelled = [r for r in peer.requests.values() if (r.prompt or "").endswith(" r0")]
    assert len(cancelled) == 3
    assert [r.reset_code for r in cancelled] == [h2.errors.ErrorCodes.CANCEL] * 3
    delays = [r.reset_at - result.raw["cancel_at"] for r in cancelled if r.reset_at]
    # A reset goes out within milliseconds; the bound here only separates "at once" from "at
    # the next timeout" on a shared machine. The measured delays are in the message.
    assert max(delays) < 1.0, f"RST_STREAM {delays} s after the cancel"
