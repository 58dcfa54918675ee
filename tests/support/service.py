"""The environment of a service child process (gunicorn, ``backend-ai serve``) on a loopback
upstream, shared by the tests and the scripts that start the service.

The upstreams here (the simulator, the paced upstream) speak HTTP/2 in cleartext, so the
service is told to use prior knowledge, and that its upstream is a simulator (``/health``
says so). By default the child's environment is this process's without any ``OPENAI_*`` or
``BACKEND_AI_*`` variable, so that what a shell happens to export cannot change what a test
or a measurement runs; a script that means to pass the shell's settings on gives ``base``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["service_env"]


def service_env(
    upstream_url: str,
    *,
    api_key: str,
    base: Mapping[str, str] | None = None,
    **settings: str,
) -> dict[str, str]:
    """``base`` (default: ours, less ``OPENAI_*`` and ``BACKEND_AI_*``), the upstream, then
    ``settings`` (``BACKEND_AI_*`` names), which win over everything before them."""
    if base is None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BACKEND_AI_"))}
    return {
        **base,
        "OPENAI_API_KEY": api_key,
        "OPENAI_BASE_URL": upstream_url,
        "BACKEND_AI_UPSTREAM_SIMULATOR": "1",
        "BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE": "1",
        **settings,
    }
