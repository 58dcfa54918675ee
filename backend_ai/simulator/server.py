"""Serving the simulator app with hypercorn on a loopback socket, cleartext or TLS.

The listening socket is bound and listening *before* hypercorn starts, so the real port (for
``--port 0``) is known and can be announced at once; connections made before hypercorn accepts
wait in the backlog instead of failing. Cleartext ports take HTTP/1.1 and HTTP/2 with prior
knowledge; TLS ports let ALPN choose between ``h2`` and ``http/1.1``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app

from . import hypercorn_glue
from .app import create_app
from .profile import DEFAULT_PROFILE, Budget, SimProfile
from .tls import ALPN_PROTOCOLS, TLSMaterial, create_tls_material

__all__ = ["ServerInfo", "bind_socket", "run_server"]

logger = logging.getLogger(__name__)

KEEP_ALIVE_TIMEOUT_S = 120
"""Longer than any client pool's idle expiry, so the client (never the server) closes idle
connections and a request can't race the server's close of a connection it is reusing."""
H2_MAX_CONCURRENT_STREAMS = 256
"""What large providers' front ends advertise; more streams than this open a second connection."""
GRACEFUL_TIMEOUT_S = 1.0
KEEP_ALIVE_MAX_REQUESTS = 2**31
"""hypercorn's default (1000) sends GOAWAY after 1000 requests on a connection, and python-h2
then treats the client's frames for streams in flight as a protocol error: every one of them
dies. Load tests pass 1000 requests per connection in seconds, so the limit is lifted."""


@dataclass(frozen=True)
class ServerInfo:
    """Where a running simulator listens; announced on start-up as one JSON line."""

    base_url: str
    origin: str
    host: str
    port: int
    tls: bool
    ca_cert_path: str | None
    pid: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 lets the kernel pick a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _hypercorn_config(tls: TLSMaterial | None) -> Config:
    config = Config()
    config.loglevel = "WARNING"
    config.accesslog = None
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT_S
    config.keep_alive_max_requests = KEEP_ALIVE_MAX_REQUESTS
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.h2_max_concurrent_streams = H2_MAX_CONCURRENT_STREAMS
    config.backlog = 1024
    config.alpn_protocols = list(ALPN_PROTOCOLS)
    if tls is not None:
        config.certfile = str(tls.cert_path)
        config.keyfile = str(tls.key_path)
    return config


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Stop when stdin closes: the parent that started us has exited, however it died."""

    def reader() -> None:
        with open(sys.stdin.fileno(), "rb", buffering=0, closefd=False) as stdin:
            while stdin.read(4096):
                pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=reader, name="simulator-stdin-watch", daemon=True).start()


async def _serve(
    app: Callable[..., object],
    config: Config,
    sockets: Sockets,
    *,
    stop_on_stdin_eof: bool,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if stop_on_stdin_eof:
        _watch_stdin(loop, stop)
    await worker_serve(
        wrap_app(app, config.wsgi_max_body_size, "asgi"),  # type: ignore[arg-type]
        config,
        sockets=sockets,
        shutdown_trigger=stop.wait,
    )


def run_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: bool = False,
    tls_dir: Path | None = None,
    defaults: SimProfile = DEFAULT_PROFILE,
    budget: Budget | None = None,
    on_ready: Callable[[ServerInfo], None] | None = None,
    stop_on_stdin_eof: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM (or stdin EOF if asked); blocks the calling thread.

    ``on_ready`` is called once the socket is listening, with the bound address.
    """
    hypercorn_glue.install()
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    own_tls_dir = tls and tls_dir is None
    material: TLSMaterial | None = None
    if tls:
        directory = Path(tempfile.mkdtemp(prefix="backend-ai-sim-tls-")) if own_tls_dir else tls_dir
        assert directory is not None
        material = create_tls_material(directory)
    try:
        config = _hypercorn_config(material)
        if material is not None:
            sockets = Sockets(secure_sockets=[sock], insecure_sockets=[], quic_sockets=[])
        else:
            sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
        scheme = "https" if tls else "http"
        origin = f"{scheme}://{_url_host(host)}:{bound_port}"
        info = ServerInfo(
            base_url=origin + "/v1",
            origin=origin,
            host=host,
            port=bound_port,
            tls=tls,
            ca_cert_path=str(material.ca_cert_path) if material else None,
            pid=os.getpid(),
        )
        app = create_app(defaults, budget)
        logger.info("simulator listening on %s (defaults %s)", info.base_url, defaults)
        if on_ready is not None:
            on_ready(info)
        asyncio.run(_serve(app, config, sockets, stop_on_stdin_eof=stop_on_stdin_eof))
    finally:
        sock.close()
        if own_tls_dir and material is not None:
            shutil.rmtree(material.ca_cert_path.parent, ignore_errors=True)
