"""The shared section executor: bounded, named threads, explicit lifecycle."""

from __future__ import annotations

import threading

import pytest

from backend_ai.errors import ConfigError, LifecycleError
from backend_ai.streaming.executor import (
    SectionExecutor,
    get_section_executor,
    shutdown_section_executor,
)


def test_runs_work_on_named_threads():
    executor = SectionExecutor(2)
    try:
        name = executor.submit(lambda: threading.current_thread().name).result(5)
        assert name.startswith("backend-ai-section")
    finally:
        executor.shutdown()


def test_is_bounded():
    executor = SectionExecutor(2)
    gate = threading.Event()
    entered = threading.Semaphore(0)
    counter_lock = threading.Lock()
    running = {"now": 0, "peak": 0}

    def work() -> None:
        with counter_lock:
            running["now"] += 1
            running["peak"] = max(running["peak"], running["now"])
        entered.release()
        gate.wait(10)
        with counter_lock:
            running["now"] -= 1

    try:
        futures = [executor.submit(work) for _ in range(6)]
        assert entered.acquire(timeout=5)
        assert entered.acquire(timeout=5)
        assert not entered.acquire(timeout=0.1)
        gate.set()
        for future in futures:
            future.result(5)
        assert running["peak"] == 2
    finally:
        gate.set()
        executor.shutdown()


def test_shutdown_twice_and_submit_after():
    executor = SectionExecutor(1)
    executor.shutdown()
    executor.shutdown()
    assert executor.closed
    with pytest.raises(LifecycleError, match="shut down"):
        executor.submit(print)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_rejects_bad_sizes(workers):
    with pytest.raises(ConfigError, match="max_workers"):
        SectionExecutor(workers)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("many", "BACKEND_AI_MAX_WORKERS must be an integer, got 'many'"),
        ("0", "BACKEND_AI_MAX_WORKERS='0': max_workers must be a positive integer"),
    ],
)
def test_size_from_environment(raw, message, monkeypatch):
    """A bad size names the variable and the value it holds."""
    monkeypatch.setenv("BACKEND_AI_MAX_WORKERS", raw)
    with pytest.raises(ConfigError) as info:
        SectionExecutor()
    assert message in str(info.value)
    monkeypatch.setenv("BACKEND_AI_MAX_WORKERS", "3")
    executor = SectionExecutor()
    try:
        assert executor.max_workers == 3
    finally:
        executor.shutdown()


def test_process_wide_executor_is_shared_and_rebuilt_after_shutdown():
    first = get_section_executor()
    assert get_section_executor() is first
    shutdown_section_executor()
    assert first.closed
    second = get_section_executor()
    assert second is not first
    assert not second.closed
