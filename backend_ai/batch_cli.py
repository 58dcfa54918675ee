"""``backend-ai batch INPUT.jsonl -o OUTPUT.jsonl``: a file of requests, streamed as they finish.

Each finished item becomes one line of the output as soon as it ends (``batch_io.Journal``);
a rerun with the same output skips the ids already there, so an interrupted or crashed run
resumes where it stopped. Ctrl-C (or SIGTERM) stops cleanly: what is in flight is cancelled
upstream, every finished line stays, and the message says how to resume. With neither
``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL`` set it runs against the embedded simulator, as
``backend-ai serve`` does. The progress bar is ``tqdm``'s, on stderr, shown only on a terminal.

The rate budget is built as the service builds its own (``rate_budget.build_rate_budget``),
from the same ``BACKEND_AI_*`` settings, ``--rpm`` / ``--tpm`` / ``--budget-window-s`` taking
precedence: with ``BACKEND_AI_REDIS_URL`` set a batch and the service share one budget.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from dataclasses import replace
from types import FrameType
from typing import Any, TextIO, cast

import httpx
import openai

from backend_ai.app.rate_budget import build_rate_budget
from backend_ai.app.settings import Settings
from backend_ai.batch_io import Defaults, InputReader, Journal, count_lines
from backend_ai.errors import BackendAIError
from backend_ai.streaming.batch import (
    BatchDone,
    BatchMode,
    BatchOptions,
    BatchProgress,
    BatchRunner,
    ErrorPolicy,
    ItemResult,
)
from backend_ai.streaming.executor import SectionExecutor
from backend_ai.streaming.http_pool import build_http_client

__all__ = ["add_arguments", "run"]

_SIMULATOR_KEY = "sk-simulator-local"
_OPENAI_URL = "https://api.openai.com/v1"
#: Exit status after an interruption, as shells report SIGINT.
EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="JSONL requests: Batch API lines or {id, prompt} lines")
    parser.add_argument(
        "-o", "--output", required=True, help="JSONL results; appended, and read to resume"
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=16,
        metavar="N",
        help="requests in flight (default 16)",
    )
    parser.add_argument(
        "--rpm", type=_positive_int, metavar="N", help="requests/min per model (BACKEND_AI_RPM)"
    )
    parser.add_argument(
        "--tpm", type=_positive_int, metavar="N", help="tokens/min per model (BACKEND_AI_TPM)"
    )
    parser.add_argument(
        "--mode",
        choices=[m.value for m in BatchMode],
        default=BatchMode.AS_COMPLETED.value,
        help="output order (default as_completed)",
    )
    parser.add_argument(
        "--on-error",
        choices=[p.value for p in ErrorPolicy],
        default=ErrorPolicy.RETRY.value,
        help="per-item error policy (default retry)",
    )
    parser.add_argument(
        "--max-retries",
        type=_non_negative_int,
        default=3,
        metavar="N",
        help="attempts after the first (default 3)",
    )
    parser.add_argument("--model", default="gpt-4o-mini", help="model when a line names none")
    parser.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=500,
        metavar="N",
        help="when a line sets none (default 500)",
    )
    parser.add_argument("--system", help="system prompt for {id, prompt} lines")
    parser.add_argument(
        "--budget-window-s",
        type=_positive_float,
        metavar="S",
        help="length of the --rpm/--tpm window (default BACKEND_AI_BUDGET_WINDOW_S or 60)",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr (default: when stderr is a terminal)",
    )


class _Stopper:
    """SIGINT / SIGTERM: the first stops the run cleanly — the runner is closed (flags only, so
    safe in a handler), in-flight items are cancelled upstream and the loop ends with its final
    event — the second interrupts at once."""

    def __init__(self, runner: BatchRunner) -> None:
        self.runner = runner
        self.signal_name: str | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.runner.close()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class _Progress:
    """The progress bar: done/failed, rate, tokens and ETA (tqdm computes rate and ETA)."""

    def __init__(self, total: int | None, mode: str, stream: TextIO) -> None:
        self.bar: Any = None
        if mode == "never" or (mode == "auto" and not stream.isatty()):
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            unit="item",
            file=stream,
            dynamic_ncols=True,
            smoothing=0.1,
            mininterval=0.2,
        )

    def item(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def progress(self, event: BatchProgress) -> None:
        if self.bar is not None:
            self.bar.set_postfix(
                ok=event.done,
                failed=event.failed,
                flight=event.in_flight,
                tokens=event.tokens,
                refresh=False,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _client(settings: Settings, stack: contextlib.ExitStack) -> tuple[openai.OpenAI, httpx.Client]:
    pool = settings.http
    key, base_url = settings.openai_api_key, settings.openai_base_url
    if key is None and base_url is None:
        from backend_ai.simulator import SimulatorProcess

        simulator = stack.enter_context(SimulatorProcess(profile="default"))
        base_url, key = simulator.base_url, _SIMULATOR_KEY
        pool = replace(pool, http2_prior_knowledge=True)
        _say(f"no OPENAI_API_KEY or OPENAI_BASE_URL set: using the embedded simulator ({base_url})")
    http_client = build_http_client(pool)
    stack.callback(http_client.close)
    client = openai.OpenAI(
        api_key=key or "sk-no-key-needed",
        base_url=base_url or _OPENAI_URL,
        http_client=cast(Any, http_client),
        max_retries=0,
    )
    stack.callback(client.close)
    return client, http_client


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The service's settings from the environment (the upstream, ``BACKEND_AI_HTTP_*``, the
    budget's ``BACKEND_AI_RPM``, ``_TPM``, ``_BUDGET_WINDOW_S``, ``_REDIS_URL``, ...), with
    ``--rpm``, ``--tpm`` and ``--budget-window-s`` in place of theirs when given."""
    budget = {
        name: value
        for name, value in (
            ("rpm", args.rpm),
            ("tpm", args.tpm),
            ("window_s", args.budget_window_s),
        )
        if value is not None
    }
    return Settings.from_env(environ).with_overrides({"budget": budget})


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.input):
        _say(f"error: no such input file: {args.input}")
        return 2
    try:
        journal = Journal(args.output)
    except OSError as exc:
        _say(f"error: cannot open the output {args.output}: {exc.strerror}")
        return 2
    with contextlib.ExitStack() as stack:
        stack.callback(journal.close)
        if journal.dropped_partial:
            _say(
                f"{args.output}: removed an incomplete last line ({journal.dropped_partial} "
                "bytes) left by an earlier crash; its item runs again"
            )
        if journal.done_ids:
            _say(f"{args.output}: {len(journal.done_ids)} items already done, skipping them")
        reader = InputReader(
            args.input,
            Defaults(model=args.model, max_tokens=args.max_tokens, system=args.system),
            skip=journal.done_ids,
            on_bad_line=lambda bad: _say(f"{args.input}: {bad}, skipped"),
        )
        total = max(0, count_lines(args.input) - len(journal.done_ids))
        try:
            options = BatchOptions(
                max_parallel=args.concurrency,
                mode=args.mode,
                on_error=args.on_error,
                max_retries=args.max_retries,
            )
            settings = _settings(args, os.environ)
            client, http_client = _client(settings, stack)
        except (BackendAIError, ValueError) as exc:
            _say(f"error: {exc}")
            return 2
        # Built as the service builds its own: with BACKEND_AI_REDIS_URL the two share one.
        budget = build_rate_budget(settings, None, http_client, upstream=str(client.base_url))
        if budget is not None:
            stack.callback(budget.close)
        executor = SectionExecutor(max(args.concurrency, 1))
        stack.callback(executor.shutdown, wait=False)
        runner = BatchRunner(client, options=options, executor=executor, budget=budget)
        progress = _Progress(total, args.progress, sys.stderr)
        stack.callback(progress.close)
        events = runner.run(reader, total=total)
        cancelled = 0
        done: BatchDone | None = None
        stopper = _Stopper(runner)
        try:
            with stopper.installed():
                for event in events:
                    if isinstance(event, ItemResult):
                        if event.error is not None and event.error.code == "cancelled":
                            cancelled += 1  # not finished: a rerun does it
                            continue
                        journal.write(event)
                        progress.item()
                    elif isinstance(event, BatchProgress):
                        progress.progress(event)
                    elif isinstance(event, BatchDone):
                        done = event
        except KeyboardInterrupt:
            events.close()  # cancels what is in flight upstream
            stopper.signal_name = stopper.signal_name or "SIGINT"
        progress.close()
        if stopper.signal_name is not None:
            _say(
                f"interrupted ({stopper.signal_name}): {journal.written} results written to "
                f"{args.output}, unfinished items cancelled; run the same command again to resume"
            )
            return EXIT_INTERRUPTED
        assert done is not None
        summary = (
            f"{done.done} done, {done.failed - cancelled} failed, {done.tokens} tokens "
            f"in {done.duration_ms / 1000:.1f} s -> {args.output}"
        )
        if reader.bad_lines:
            summary += f"; {reader.bad_lines} bad input lines skipped"
        if cancelled:
            summary += f"; {cancelled} items cancelled (rerun to do them)"
        _say(summary)
        return 1 if done.failed or reader.bad_lines else 0
