"""The access log under a real gunicorn: one line per request, what happened, no secrets."""

from __future__ import annotations

import re
import time

import httpx

from .conftest import SECRET_KEY, StartService
from .sse_client import check_protocol, parse_frames

PROMPT = "my PRIVATE dream about a glass city"
LINE = re.compile(
    r"request_id=(?P<request_id>\S+) path=(?P<path>\S+) route=(?P<route>\S+) "
    r"sections=(?P<sections>\d+) status=(?P<status>\d+) duration_ms=(?P<duration>[\d.]+) "
    r"first_chunk_ms=(?P<first>\S+) outcome=(?P<outcome>\S+)"
)


def access_lines(lines: list[str], count: int, timeout: float = 10.0) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [m.groupdict() for line in list(lines) if (m := LINE.search(line))]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_one_access_line_per_request_with_the_run_and_no_prompt_or_key(
    start_service: StartService,
) -> None:
    server = start_service()
    assert server.url is not None
    baseline = len(access_lines(server.log_lines, 0, timeout=0))  # readiness polls of /health
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
    lines = access_lines(server.log_lines, baseline + 4)[baseline:]
    assert len(lines) == 4, "".join(server.log_lines)
    run, failed_run, refusal, health = lines

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
    baseline = len(access_lines(server.log_lines, 0, timeout=0))
    sim = {"ttft_ms": 0, "itl_ms": 20, "tokens": 500}
    with (
        httpx.Client(base_url=server.url, timeout=30) as http,
        http.stream("POST", "/dream/interpret-stream", json={"dream": "x", "sim": sim}) as r,
    ):
        for chunk in r.iter_bytes():
            if b'"chunk"' in chunk:
                break
    lines = access_lines(server.log_lines, baseline + 1)[baseline:]
    assert [line["outcome"] for line in lines] == ["cancelled"], "".join(server.log_lines)
    assert lines[0]["first"] != "-"
