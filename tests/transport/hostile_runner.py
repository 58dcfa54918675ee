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
"run_timeout_s": float, "prompt_padding": int}``. A section named ``x`` sends the prompt
``section x r<run>`` (padded to make a large request body). A cancel is
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

from backend_ai.app.services.parallel_streaming import (
    ParallelStreamManager,
    PoolSettings,
    RunOptions,
    SectionExecutor,
    StreamConfig,
    build_http_client,
)

API_KEY = "sk-test-hostile-5e0f2a9b71c4"


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


def _run(
    client: openai.OpenAI,
    executor: SectionExecutor,
    options: RunOptions,
    spec: dict[str, Any],
    run: int,
    errors: _ErrorRecords,
) -> dict[str, Any]:
    manager = ParallelStreamManager(client, options=options, executor=executor)
    padding = spec.get("prompt_padding", 0)
    configs = [StreamConfig(name, padded_prompt(name, run, padding)) for name in spec["sections"]]
    events: list[dict[str, Any]] = []
    first_error = len(errors.records)

    def consume() -> None:
        for event in manager.stream(configs):
            events.append(event.payload())

    started = time.monotonic()
    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    result: dict[str, Any] = {"run": run, "cancel_returned": None, "cancel_s": None}
    cancel_after = spec.get("cancel_after_s")
    if cancel_after is not None:
        consumer.join(cancel_after)
        if consumer.is_alive():
            cancelled = threading.Event()

            def cancel() -> None:
                manager.close()
                cancelled.set()

            t0 = time.monotonic()
            threading.Thread(target=cancel, daemon=True).start()
            result["cancel_returned"] = cancelled.wait(spec.get("cancel_timeout_s", 5.0))
            result["cancel_s"] = round(time.monotonic() - t0, 3) if cancelled.is_set() else None
    consumer.join(max(0.0, spec["run_timeout_s"] - (time.monotonic() - started)))
    result.update(
        ended=not consumer.is_alive(),
        seconds=round(time.monotonic() - started, 3),
        events=list(events),
        error_logs=errors.records[first_error:],
    )
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
        if not result["ended"]:
            break  # the pool is wedged: later runs would only hang as well
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
