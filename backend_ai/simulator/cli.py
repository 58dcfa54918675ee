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

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)

_PROFILES = {"default": DEFAULT_PROFILE, "fast": FAST_PROFILE}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
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
            "--" + key.replace("_", "-"), dest=key, type=key_type, metavar=key_type.__name__.upper()
        )
    budget = parser.add_argument_group("budget mode (per API key)")
    budget.add_argument("--max-concurrent-per-key", type=int, metavar="C")
    budget.add_argument("--rps-per-key", type=float, metavar="R")
    budget.add_argument("--rpm-per-key", type=int, metavar="N", help="requests per window")
    budget.add_argument("--tpm-per-key", type=int, metavar="N", help="tokens per window")
    budget.add_argument(
        "--budget-window-s", type=float, default=60.0, metavar="S", help="window (default 60 s)"
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
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")


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
