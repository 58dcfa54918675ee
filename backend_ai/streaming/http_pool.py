"""The process-wide pooled HTTP/2 client every upstream call goes through.

One ``httpx.Client`` per process: HTTP/2 multiplexes a run's parallel streams over one TCP
connection, keep-alive saves the handshake on every request, and one pool bounds the sockets a
process opens. It is built on ``UpstreamTransport`` so a closed or cancelled stream is reset
upstream at once. Behind a proxy (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` in the
environment) it uses httpx's own transport instead, which speaks through proxies; streams are
then cancelled by shutting their socket down (HTTP/1.1) or when their worker next reads. The
client is created lazily (so a gunicorn master that forks workers never
shares a socket with them), dropped in a forked child, and closed by ``close_http_client()``.
"""

from __future__ import annotations

import math
import os
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from backend_ai.errors import ConfigError, LifecycleError
from backend_ai.streaming import environment
from backend_ai.streaming.environment import Variable
from backend_ai.streaming.transport import UpstreamTransport

__all__ = [
    "POOL_VARIABLES",
    "HttpClientPool",
    "PoolSettings",
    "build_http_client",
    "close_http_client",
    "get_http_client",
]


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    """Sizes and timeouts of the pooled client; ``from_env`` reads ``BACKEND_AI_HTTP_*``."""

    max_keepalive_connections: int = 10
    max_connections: int = 20
    keepalive_expiry_s: float = 30.0
    timeout_s: float = 60.0
    connect_timeout_s: float = 15.0
    http2: bool = True
    #: Speak HTTP/2 on cleartext ``http://`` URLs without negotiation (h2c prior knowledge).
    http2_prior_knowledge: bool = False
    #: An HTTP/2 connection that heard nothing for this long is sent a PING ...
    ping_interval_s: float = 5.0
    #: ... and closed, failing its streams, when the answer takes longer than this.
    ping_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_keepalive_connections", "max_connections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.max_keepalive_connections > self.max_connections:
            raise ConfigError(
                f"max_keepalive_connections ({self.max_keepalive_connections}) cannot exceed "
                f"max_connections ({self.max_connections})"
            )
        for name in (
            "keepalive_expiry_s",
            "timeout_s",
            "connect_timeout_s",
            "ping_interval_s",
            "ping_timeout_s",
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.http2_prior_knowledge and not self.http2:
            raise ConfigError("http2_prior_knowledge needs http2 enabled")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PoolSettings:
        """The defaults, with each field a ``BACKEND_AI_HTTP_*`` variable sets replaced."""
        return environment.read(cls, POOL_VARIABLES, environ)


#: The variables ``PoolSettings.from_env`` reads, one per field.
POOL_VARIABLES = (
    Variable("BACKEND_AI_HTTP_MAX_KEEPALIVE", "max_keepalive_connections", environment.integer),
    Variable("BACKEND_AI_HTTP_MAX_CONNECTIONS", "max_connections", environment.integer),
    Variable("BACKEND_AI_HTTP_KEEPALIVE_EXPIRY", "keepalive_expiry_s", environment.number),
    Variable("BACKEND_AI_HTTP_TIMEOUT", "timeout_s", environment.number),
    Variable("BACKEND_AI_HTTP_CONNECT_TIMEOUT", "connect_timeout_s", environment.number),
    Variable("BACKEND_AI_HTTP_HTTP2", "http2", environment.flag),
    Variable("BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE", "http2_prior_knowledge", environment.flag),
    Variable("BACKEND_AI_HTTP_PING_INTERVAL", "ping_interval_s", environment.number),
    Variable("BACKEND_AI_HTTP_PING_TIMEOUT", "ping_timeout_s", environment.number),
)


def build_http_client(
    settings: PoolSettings | None = None, *, verify: ssl.SSLContext | str | bool = True
) -> httpx.Client:
    """A new pooled client with cancellable streams (tests and benchmarks build their own)."""
    settings = settings or PoolSettings()
    timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
    if _environment_proxies():
        return httpx.Client(
            verify=verify,
            http2=settings.http2,
            limits=httpx.Limits(
                max_keepalive_connections=settings.max_keepalive_connections,
                max_connections=settings.max_connections,
                keepalive_expiry=settings.keepalive_expiry_s,
            ),
            timeout=timeout,
        )
    transport = UpstreamTransport(
        verify=verify,
        http2=settings.http2,
        http2_prior_knowledge=settings.http2_prior_knowledge,
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_keepalive_connections,
        keepalive_expiry_s=settings.keepalive_expiry_s,
        ping_interval_s=settings.ping_interval_s,
        ping_timeout_s=settings.ping_timeout_s,
        write_timeout_s=settings.timeout_s,
    )
    return httpx.Client(transport=transport, timeout=timeout)


def _environment_proxies() -> bool:
    """True when the environment names a proxy for HTTP(S) (the variables httpx honours)."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("https", "http", "all"))


class HttpClientPool:
    """Owns one lazily built client: ``get()`` until ``close()``, then ``LifecycleError``."""

    def __init__(
        self, settings: PoolSettings | None = None, *, verify: ssl.SSLContext | str | bool = True
    ) -> None:
        self._settings = settings
        self._verify = verify
        self._client: httpx.Client | None = None
        self._closed = False
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        with self._lock:
            if self._closed:
                raise LifecycleError("this HTTP client pool is closed")
            if self._client is None:
                settings = self._settings or PoolSettings.from_env()
                self._client = build_http_client(settings, verify=self._verify)
            return self._client

    def close(self) -> None:
        """Close the client and its connections; safe to call twice."""
        with self._lock:
            client, self._client, self._closed = self._client, None, True
        if client is not None:
            client.close()

    def _forget_after_fork(self) -> None:
        # A forked child must not use (or close) the parent's sockets.
        self._client = None
        self._lock = threading.Lock()


_default_pool = HttpClientPool()
_default_pool_lock = threading.Lock()


def get_http_client() -> httpx.Client:
    """The process-wide pooled client, built on first use from ``BACKEND_AI_HTTP_*``."""
    return _default_pool.get()


def close_http_client() -> None:
    """Close the process-wide client (app shutdown); a later ``get_http_client`` builds anew."""
    global _default_pool
    with _default_pool_lock:
        pool, _default_pool = _default_pool, HttpClientPool()
    pool.close()


os.register_at_fork(after_in_child=lambda: _default_pool._forget_after_fork())
