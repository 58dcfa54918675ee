"""Runs engine runs against a hostile server in a child process, so a hang cannot outlive a test.

A hung transport leaves threads blocked on locks nothing will release; in the test process
they would keep pytest from exiting (the section executor's threads are joined at exit). So
the scenario tests start this script with ``sys.executable`` and a JSON plan, and it runs the
engine through its public API only — ``openai.OpenAI(http_client=build_http_client(...))`` and
``ParallelStreamManager`` — one run after another on the same pooled client, each in a thread
with a deadline. It prints one JSON line per run (its events, whether it ended, how long the
cancel took, the ERROR log records) and leaves with ``os._exit``, hung threads and all.

Plan keys: ``base_url``, ``pool`` (``PoolSettings`` keywords), ``options`` (``RunOptions``
keywords), ``runs``: a list of ``{"sections": [names], "cancel_after_s": float | null,
"run_timeout_s": float, "prompt_padding": int, "alongside": {run spec}}``; ``alongside`` is a
second run started at the same time on the same client and never cancelled. A section named
``x`` sends the prompt ``section x r<run>`` (padded to make a large request body). A cancel is
``ParallelStreamManager.close()`` from another thread (what a gunicorn shutdown or a stall
watchdog does); every run gets its own manager over the same SDK client, so the pool's later
runs can be checked after a cancelled one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Any

import openai

from backend_ai.streaming import (
    ParallelStreamManager,
    PoolSettings,
    RunOptions,
    StreamConfig,
    build_http_client,
)
from backend_ai.streaming.executor import SectionExecutor

API_KEY = "sk-test-hostile-5e0f2a9b71c4"
#: A run's companion (``alongside``) is numbered this much higher in its prompts.
ALONGSIDE = 100


def prompt_of(section: str, run: int = 0) -> str:
    """The prompt of ``section`` in the plan's ``run``-th run: the server keys what it sent by
    prompt, so each run's prompts differ."""
    return f"section {section} r{run}"


def padded_prompt(section: str, run: int, padding: int) -> str:
    """The section's prompt made ``padding`` characters longer (a request body that does not
    fit in the default HTTP/2 stream window)."""
    return prompt_of(section, run) + (" " + "." * padding if padding else "")


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}")


class _Running:
    """One run consuming in its own thread, with its own manager over the shared client."""

    def __init__(
        self,
        client: openai.OpenAI,
        executor: SectionExecutor,
        options: RunOptions,
        spec: dict[str, Any],
        run: int,
    ) -> None:
        self.run = run
        self.manager = ParallelStreamManager(client, options=options, executor=executor)
        padding = spec.get("prompt_padding", 0)
        configs = [
            StreamConfig(name, padded_prompt(name, run, padding)) for name in spec["sections"]
        ]
        self.events: list[dict[str, Any]] = []

        def consume() -> None:
            for event in self.manager.stream(configs):
                self.events.append(event.payload())

        self.started = time.monotonic()
        self.consumer = threading.Thread(target=consume, daemon=True)
        self.consumer.start()

    def cancel(self, timeout: float) -> dict[str, Any]:
        """``close()`` the run's manager from another thread, as a shutdown or watchdog would."""
        cancelled = threading.Event()

        def cancel() -> None:
            self.manager.close()
            cancelled.set()

        t0 = time.monotonic()
        threading.Thread(target=cancel, daemon=True).start()
        returned = cancelled.wait(timeout)
        return {
            "cancel_returned": returned,
            "cancel_s": round(time.monotonic() - t0, 3) if returned else None,
            # CLOCK_MONOTONIC is system-wide: comparable with the server's own readings.
            "cancel_at": t0,
        }

    def finish(self, run_timeout_s: float) -> dict[str, Any]:
        self.consumer.join(max(0.0, run_timeout_s - (time.monotonic() - self.started)))
        return {
            "run": self.run,
            "ended": not self.consumer.is_alive(),
            "seconds": round(time.monotonic() - self.started, 3),
            "events": list(self.events),
        }


def _run(
    client: openai.OpenAI,
    executor: SectionExecutor,
    options: RunOptions,
    spec: dict[str, Any],
    run: int,
    errors: _ErrorRecords,
) -> dict[str, Any]:
    first_error = len(errors.records)
    running = _Running(client, executor, options, spec, run)
    alongside = spec.get("alongside")
    companion = (
        _Running(client, executor, options, alongside, ALONGSIDE + run) if alongside else None
    )
    result: dict[str, Any] = {"cancel_returned": None, "cancel_s": None, "cancel_at": None}
    cancel_after = spec.get("cancel_after_s")
    if cancel_after is not None:
        running.consumer.join(cancel_after)
        if running.consumer.is_alive():
            result.update(running.cancel(spec.get("cancel_timeout_s", 5.0)))
    result.update(running.finish(spec["run_timeout_s"]))
    if companion is not None and alongside is not None:
        result["alongside"] = companion.finish(
            alongside.get("run_timeout_s", spec["run_timeout_s"])
        )
    result["error_logs"] = errors.records[first_error:]
    return result


def main() -> None:
    plan = json.loads(sys.argv[1])
    errors = _ErrorRecords()
    logging.getLogger().addHandler(errors)
    http_client = build_http_client(PoolSettings(http2_prior_knowledge=True, **plan["pool"]))
    client = openai.OpenAI(
        api_key=API_KEY, base_url=plan["base_url"], http_client=http_client, max_retries=0
    )
    options = RunOptions(**plan.get("options", {}))
    executor = SectionExecutor(16)
    for run, spec in enumerate(plan["runs"]):
        result = _run(client, executor, options, spec, run, errors)
        print(json.dumps(result), flush=True)
        if not result["ended"] or not result.get("alongside", {"ended": True})["ended"]:
            break  # the pool is wedged: later runs would only hang as well
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
