"""The per-process service of the Django integration, configured from Django's settings.

Django has no application object to hang state on, so the service lives in this module: built
on first use under a lock, so a gunicorn master that imports the project before forking holds
no threads or sockets, and each worker builds its own. A service built in another process (a
fork after first use) is never reused: its threads do not exist in the child.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from django.conf import settings as django_settings

from backend_ai.app.extension import ServiceState, build_state
from backend_ai.app.settings import Settings
from backend_ai.errors import ConfigError

__all__ = ["SETTINGS_NAME", "close_service", "get_service", "settings_from_django"]

#: The Django setting read: a ``Settings``, or a mapping of its field names.
SETTINGS_NAME = "BACKEND_AI"

_lock = threading.Lock()
_service: ServiceState | None = None
_service_pid = 0


def settings_from_django() -> Settings:
    """``settings.BACKEND_AI`` as a validated ``Settings``; unknown names are a ``ConfigError``.

    A mapping may give a nested group (``run``, ``http``) as a mapping of some of its fields.
    Fields it leaves out take ``Settings``' defaults (history off: a Django project keeps its
    own records).
    """
    raw = getattr(django_settings, SETTINGS_NAME, None)
    if isinstance(raw, Settings):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"settings.{SETTINGS_NAME} must be a Settings or a mapping of its fields")
    try:
        return Settings().with_overrides(raw)
    except ConfigError as exc:
        raise ConfigError(f"settings.{SETTINGS_NAME}: {exc}") from None


def get_service() -> ServiceState:
    """This process's service, built from Django's settings on first use."""
    global _service, _service_pid
    service = _service
    if service is not None and _service_pid == os.getpid() and not service.closed:
        return service
    with _lock:
        if _service is None or _service_pid != os.getpid() or _service.closed:
            _service = build_state(settings_from_django())
            _service_pid = os.getpid()
        return _service


def close_service() -> None:
    """Close this process's service (open runs end with ``done``); safe twice."""
    global _service
    with _lock:
        service, _service = _service, None
    if service is not None and _service_pid == os.getpid():
        service.close()
