"""How the browser tests find chromium, and that they skip (or fail under CI) without one.

These do not need a browser: they check the search itself, then run the page tests in a child
pytest whose environment has no chromium at all (``BACKEND_AI_CHROMIUM`` pointing nowhere, a
``PATH`` holding only the Python interpreter), as on a machine that never installed one.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .chromium import ENV_VAR, find_chromium, missing_reason

ROOT = Path(__file__).resolve().parents[2]


def fake_executable(directory: Path, name: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_environment_variable_wins(tmp_path: Path) -> None:
    chosen = fake_executable(tmp_path, "my-chrome")
    on_path = tmp_path / "bin"
    on_path.mkdir()
    fake_executable(on_path, "chromium")
    assert find_chromium({ENV_VAR: str(chosen), "PATH": str(on_path)}) == str(chosen)


def test_path_names_in_order(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    fake_executable(second, "google-chrome")
    fake_executable(first, "chromium-browser")
    path = f"{second}{os.pathsep}{first}"
    # chromium-browser comes before google-chrome, wherever each directory is on PATH.
    assert find_chromium({"PATH": path}) == str(first / "chromium-browser")


def test_an_unusable_variable_falls_back_to_path(tmp_path: Path) -> None:
    fake_executable(tmp_path, "chromium")
    env = {ENV_VAR: str(tmp_path / "nowhere"), "PATH": str(tmp_path)}
    assert find_chromium(env) == str(tmp_path / "chromium")


def test_none_found_says_what_was_tried(tmp_path: Path) -> None:
    env = {ENV_VAR: str(tmp_path / "nowhere"), "PATH": str(tmp_path)}
    assert find_chromium(env) is None
    reason = missing_reason(env)
    assert "nowhere" in reason
    assert "chromium-browser" in reason
    assert "apt-get" in reason


def run_page_tests_without_chromium(
    tmp_path: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(
        {ENV_VAR: str(tmp_path / "no-such-chromium"), "PATH": str(Path(sys.executable).parent)}
    )
    env.update(extra)
    assert find_chromium(env) is None, "the trimmed PATH still holds a chromium"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/browser/test_page.py",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


@pytest.mark.slow
def test_page_tests_skip_with_a_reason_without_chromium(tmp_path: Path) -> None:
    result = run_page_tests_without_chromium(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "skipped" in result.stdout
    assert "passed" not in result.stdout
    assert "no chromium found" in result.stdout


@pytest.mark.slow
def test_page_tests_fail_without_chromium_under_ci(tmp_path: Path) -> None:
    result = run_page_tests_without_chromium(tmp_path, CI="true")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "no chromium found" in result.stdout
    assert "skipped" not in result.stdout
