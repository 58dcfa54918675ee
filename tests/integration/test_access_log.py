"""The access log under a real gunicorn: one line per request, what happened, no secrets."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

import httpx

from tests.support.protocol import check_protocol
from tests.support.sse import parse_frames

from .conftest import SECRET_KEY, StartService

PROMPT = "my PRIVATE dream about a glass city"
LINE = re.compile(
    r"request_id=(?P<request_id>\S+) path=(?P<path>\S+) route=(?P<route>\S+) "
    r"sections=(?P<sections>\d+) status=(?P<status>\d+) duration_ms=(?P<duration>[\d.]+) "
    r"first_chunk_ms=(?P<first>\S+) outcome=(?P<outcome>\S+)"
)


def access_lines(
    lines: Iterable[str], count: int, *, path: str | None = None, timeout: float = 10.0
) -> list[dict[str, str]]:
    """The access lines (of ``path``, or all), once there are ``count`` of them or on timeout.

    The log reaches the test through a pipe and a reader thread: a line may come late.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = [m.groupdict() for line in list(lines) if (m := LINE.search(line))]
        found = [f for f in found if path is None or f["path"] == path]
        if len(found) >= count or time.monotonic() > deadline:
            return found


def test_one_access_line_per_request_with_the_run_and_no_prompt_or_key(
    start_service: StartService,
) -> None:
    server = start_service()
    assert server.url is not None
    # Readiness polls of /health are logged too, possibly after the server was declared ready.
    baseline = len(access_lines(server.log_lines, 0, path="/health", timeout=0))
    sim = {"ttft_ms": 50, "itl_ms": 2, "tokens": 10}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        streamed = http.post("/dream/interpret-stream", json={"dream": PROMPT, "sim": sim})
        assert streamed.status_code == 200
        check_protocol(parse_frames(streamed.text))
        failing = {**sim, "status": 500}
        failed = http.post(
            "/compare/stream", json={"prompt": PROMPT, "models": ["a"], "sim": failing}
        )
        assert failed.status_code == 200
        refused = http.post("/dream/interpret-stream", json={"dream": PROMPT, "mode": "x"})
        assert refused.status_code == 422
        assert http.get("/health").status_code == 200
    (failed_run,) = access_lines(server.log_lines, 1, path="/compare/stream")
    refusals = access_lines(server.log_lines, 2, path="/dream/interpret-stream")
    assert len(refusals) == 2, "".join(server.log_lines)
    run, refusal = refusals
    health = access_lines(server.log_lines, baseline + 1, path="/health")[-1]

    assert run["request_id"] == streamed.headers["X-Request-Id"]
    assert run["path"] == "/dream/interpret-stream"
    assert (run["route"], run["sections"], run["status"], run["outcome"]) == (
        "dream",
        "3",
        "200",
        "ok",
    )
    # The first chunk comes after the simulator's 50 ms to first token, and before the end.
    assert 50 <= float(run["first"]) <= float(run["duration"])

    assert failed_run["request_id"] == failed.headers["X-Request-Id"]
    assert (failed_run["route"], failed_run["sections"], failed_run["outcome"]) == (
        "compare",
        "1",
        "failed",
    )
    assert failed_run["first"] == "-"

    assert (refusal["request_id"], refusal["status"], refusal["outcome"]) == ("-", "422", "refused")
    assert (health["path"], health["status"], health["outcome"]) == ("/health", "200", "ok")

    log = "".join(server.log_lines)
    assert "PRIVATE" not in log
    assert SECRET_KEY not in log


def test_a_client_that_goes_away_is_logged_as_cancelled(start_service: StartService) -> None:
    server = start_service()
    assert server.url is not None
    sim = {"ttft_ms": 0, "itl_ms": 20, "tokens": 500}
    with (
        httpx.Client(base_url=server.url, timeout=30) as http,
        http.stream("POST", "/dream/interpret-stream", json={"dream": "x", "sim": sim}) as r,
    ):
        for chunk in r.iter_bytes():
            if b'"chunk"' in chunk:
                break
    lines = access_lines(server.log_lines, 1, path="/dream/interpret-stream")
    assert [line["outcome"] for line in lines] == ["cancelled"], "".join(server.log_lines)
    assert lines[0]["first"] != "-"
