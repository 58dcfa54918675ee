"""Commands and the service without their optional packages, as after a partial install.

``pip install backend-ai`` is the engine alone; a command whose extra is missing must say which
extra to install, in one line, with exit status 2 and no traceback. The missing package is
simulated for real in a child interpreter (``sys.modules[name] = None``: importing it raises
``ImportError``, as for a package that is not installed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend_ai.simulator import SimulatorProcess
from tests.support.protocol import check_protocol
from tests.support.sse import parse_frames
from tests.unit.test_dependencies import blocking


def clean_environment() -> dict[str, str]:
    """This process's environment without the upstream's and the service's settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BACKEND_AI_"))}


def run_blocked(
    blocked: list[str], code: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", blocking(blocked, code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def cli_without(blocked: list[str], *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = clean_environment()
    environ.update(env)
    code = f"from backend_ai.cli import main\nsys.exit(main({argv!r}))\n"
    return run_blocked(blocked, code, environ)


@pytest.mark.parametrize(
    ("argv", "blocked", "extra"),
    [
        (["serve"], ["flask"], "serve"),
        (["serve", "--port", "0"], ["gunicorn"], "serve"),
        (["serve"], ["hypercorn"], "serve"),
        (["simulate", "--port", "0"], ["trustme"], "simulator"),
        (["batch", "in.jsonl", "-o", "out.jsonl"], ["tqdm"], "batch"),
    ],
)
def test_a_command_without_its_extra_names_the_extra_in_one_line(
    argv: list[str], blocked: list[str], extra: str
) -> None:
    result = cli_without(blocked, *argv)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    expected = f"backend-ai {argv[0]} needs the '{extra}' extra ({blocked[0]} is not installed)"
    assert expected in lines[0]
    assert f"pip install 'backend-ai[{extra}]'" in lines[0]


def test_redis_is_needed_only_when_a_redis_url_is_set() -> None:
    url = "redis://127.0.0.1:1/0"
    result = cli_without(["redis"], "serve", BACKEND_AI_REDIS_URL=url)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "backend-ai serve with BACKEND_AI_REDIS_URL set needs the 'redis' extra (redis is not "
        "installed): pip install 'backend-ai[redis]', or in a clone: pip install -e '.[redis]'"
    ]
    assert cli_without(["redis"], "serve", "--help").returncode == 0


def test_help_lists_a_command_whose_extra_is_missing_and_says_which() -> None:
    result = cli_without(["hypercorn"], "--help", COLUMNS="200")  # one line per command
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    simulate = next(line for line in lines if line.strip().startswith("simulate"))
    assert "'simulator' extra" in simulate


def test_the_service_streams_without_redis_tqdm_or_httpx_installed(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    """With a local rate budget (no ``BACKEND_AI_REDIS_URL``) the ``redis`` package is never
    needed; the app is the real one, driven through Flask's test client."""
    env = clean_environment()
    env.update(
        OPENAI_API_KEY="sk-test-extras",
        OPENAI_BASE_URL=simulator.base_url,
        BACKEND_AI_UPSTREAM_SIMULATOR="1",
        BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE="1",
        BACKEND_AI_RPM="600",
        BACKEND_AI_HISTORY_DB=str(tmp_path / "history.sqlite3"),
    )
    code = (
        "from backend_ai.app.factory import create_app\n"
        "app = create_app()\n"
        "with app.test_client() as http:\n"
        "    answer = http.post('/dream/interpret-stream', json={'dream': 'A glass city.'})\n"
        "    sys.stdout.write(answer.get_data(as_text=True))\n"
    )
    result = run_blocked(["redis", "tqdm", "httpx", "httpcore"], code, env)
    assert result.returncode == 0, result.stderr[-2000:]
    texts = check_protocol(parse_frames(result.stdout))
    assert len(texts) == 3, texts
    assert all(texts.values()), texts


def test_the_batch_command_runs_without_the_service_installed(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    """``[batch]`` has no Flask, gunicorn, Prometheus client or redis: a run needs none."""
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = [f"item-{n}" for n in range(3)]
    source.write_text("".join(json.dumps({"id": i, "prompt": f"Say {i}."}) + "\n" for i in ids))
    env = clean_environment()
    env.update(
        OPENAI_API_KEY="sk-test-extras",
        OPENAI_BASE_URL=simulator.base_url,
        BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE="1",
    )
    service = ["flask", "werkzeug", "gunicorn", "prometheus_client", "redis", "httpx", "httpcore"]
    argv = ["batch", str(source), "-o", str(output)]
    code = f"from backend_ai.cli import main\nsys.exit(main({argv!r}))\n"
    result = run_blocked(service, code, env)
    assert result.returncode == 0, result.stderr[-2000:]
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["id"] for r in results) == ids
    assert [r["error"] for r in results] == [None] * len(ids)


def test_a_redis_budget_without_redis_installed_names_the_extra() -> None:
    code = (
        "from backend_ai.errors import ConfigError\n"
        "from backend_ai.streaming.redis_budget import RedisLink\n"
        "try:\n"
        "    RedisLink('redis://127.0.0.1:1/0')\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    result = run_blocked(["redis"], code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("pip install 'backend-ai[redis]'")
