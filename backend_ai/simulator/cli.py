"""``backend-ai simulate``: run the upstream simulator in the foreground.

Every sim key is also a flag (``--ttft-ms``, ``--itl-ms``, ``--tokens``, ``--jitter``, ...)
setting the server-wide default; requests can still override it per request.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from .profile import (
    DEFAULT_PROFILE,
    FAST_PROFILE,
    SIM_KEY_TYPES,
    Budget,
    SimKeyError,
    parse_sim_keys,
)
from .server import ServerInfo, run_server

__all__ = ["DESCRIPTION", "EPILOG", "add_arguments", "run"]

logger = logging.getLogger(__name__)

_PROFILES = {"default": DEFAULT_PROFILE, "fast": FAST_PROFILE}

DESCRIPTION = """\
Run the OpenAI-compatible upstream simulator in the foreground: POST /v1/chat/completions
(streamed or not) over HTTP/1.1 and HTTP/2, with controllable timing and injected faults.

The flags below set server-wide defaults; a request overrides them with an "X-Sim" header or a
"sim" object in its body (docs/SIMULATOR.md). It needs no API key of yours: any bearer key is
accepted."""

EPILOG = """\
examples:
  backend-ai simulate --port 8001                      # http://127.0.0.1:8001/v1
  backend-ai simulate --port 0 --profile fast          # a free port, tokens as fast as possible
  backend-ai simulate --ttft-ms 800 --itl-ms 50 --error-after 20
  OPENAI_BASE_URL=http://127.0.0.1:8001/v1 backend-ai serve   # the service on it"""

#: One line per sim key for ``--help``; docs/SIMULATOR.md has the whole story.
_KEY_HELP = {
    "ttft_ms": "milliseconds to the first content token",
    "itl_ms": "milliseconds between content tokens",
    "tokens": "content tokens per completion (0-100000)",
    "jitter": "each delay scaled by a seeded factor in [1-jitter, 1+jitter] (0-1)",
    "seed": "seed of the text and the jitter (default: derived from the request)",
    "tag": "label echoed into the stats' records",
    "fail_first": "the first N attempts of a request get 429",
    "attempt_key": "groups attempts for --fail-first (default: a fingerprint of the body)",
    "retry_after": "Retry-After header, seconds, on --fail-first and --status errors",
    "retry_after_ms": "retry-after-ms header on --fail-first and --status errors",
    "status": "answer every request with this error status (400-599)",
    "drop_after": "abort the stream after N chunks (HTTP/2 reset, HTTP/1.1 close)",
    "stall_after": "go silent after N chunks, for --stall-s seconds",
    "stall_s": "length of the --stall-after silence, seconds",
    "malformed_after": "one line of invalid JSON after N chunks",
    "truncate_after": "end the body cleanly after N chunks, without finish or [DONE]",
    "error_after": "an error object after N chunks, then the end of the body",
    "header_delay_ms": "milliseconds before the response headers",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8001, help="port to bind; 0 picks a free one (default 8001)"
    )
    parser.add_argument(
        "--tls", action="store_true", help="serve HTTPS with a fresh local CA (ALPN h2, http/1.1)"
    )
    parser.add_argument(
        "--tls-dir", type=Path, help="where to write ca.pem/cert.pem/key.pem (default: a temp dir)"
    )
    parser.add_argument(
        "--profile",
        choices=sorted(_PROFILES),
        default="default",
        help="start-up defaults: 'default' looks like a real model, 'fast' is for tests",
    )
    group = parser.add_argument_group("server-wide sim defaults (see docs/SIMULATOR.md)")
    for key, key_type in sorted(SIM_KEY_TYPES.items()):
        group.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            type=key_type,
            metavar=key_type.__name__.upper(),
            help=_KEY_HELP.get(key, "see docs/SIMULATOR.md"),
        )
    budget = parser.add_argument_group("budget mode (per API key)")
    budget.add_argument(
        "--max-concurrent-per-key",
        type=int,
        metavar="C",
        help="at most C requests in flight per API key; more get 429",
    )
    budget.add_argument(
        "--rps-per-key",
        type=float,
        metavar="R",
        help="at most R requests a second per API key (token bucket); more get 429",
    )
    budget.add_argument(
        "--rpm-per-key",
        type=int,
        metavar="N",
        help="at most N requests per window per API key; answers carry x-ratelimit-* headers",
    )
    budget.add_argument(
        "--tpm-per-key",
        type=int,
        metavar="N",
        help="at most N tokens (prompt + max_tokens) per window per API key",
    )
    budget.add_argument(
        "--budget-window-s",
        type=float,
        default=60.0,
        metavar="S",
        help="the window of --rpm-per-key / --tpm-per-key (default 60 s)",
    )
    parser.add_argument(
        "--announce",
        choices=("text", "json"),
        default="text",
        help="start-up line format; 'json' is what SimulatorProcess reads",
    )
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes (used when a parent process owns the simulator)",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        help="logging level: DEBUG, INFO, WARNING or ERROR (default WARNING)",
    )


def _announce(fmt: str) -> Callable[[ServerInfo], None]:
    def announce(info: ServerInfo) -> None:
        if fmt == "json":
            line = info.to_json()
        else:
            line = f"backend-ai simulator listening on {info.base_url}"
            if info.ca_cert_path:
                line += f" (CA certificate: {info.ca_cert_path})"
        print(line, flush=True)

    return announce


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    keys = {key: getattr(args, key) for key in SIM_KEY_TYPES if getattr(args, key) is not None}
    try:
        defaults = _PROFILES[args.profile].with_keys(parse_sim_keys(keys, source="command line"))
        budget = Budget(
            max_concurrent_per_key=args.max_concurrent_per_key,
            rps_per_key=args.rps_per_key,
            rpm_per_key=args.rpm_per_key,
            tpm_per_key=args.tpm_per_key,
            window_s=args.budget_window_s,
        )
    except SimKeyError as exc:
        logger.error("invalid option: %s", exc)
        return 2
    run_server(
        host=args.host,
        port=args.port,
        tls=args.tls,
        tls_dir=args.tls_dir,
        defaults=defaults,
        budget=budget,
        on_ready=_announce(args.announce),
        stop_on_stdin_eof=args.exit_on_stdin_eof,
    )
    return 0
