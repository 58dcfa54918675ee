"""Settings of the example Django project that serves backend_ai's streaming routes.

The upstream is chosen as ``backend-ai serve`` chooses it: ``OPENAI_API_KEY`` and
``OPENAI_BASE_URL`` when either is set (with the service's other ``BACKEND_AI_*`` variables,
read by ``Settings.from_env``), otherwise an upstream simulator started for this process, which
exits with it.
"""

from __future__ import annotations

import os

from django.core.management.utils import get_random_secret_key

from backend_ai.app.settings import Settings


def _backend_ai_settings() -> Settings:
    # History is the Flask service's SQLite log; a Django project keeps its own records.
    settings = Settings.from_env().with_overrides({"history_db_path": None})
    if settings.openai_api_key is None and settings.openai_base_url is None:
        from backend_ai.simulator import SimulatorProcess

        simulator = SimulatorProcess(profile="default").start()  # ends when this process does
        settings = settings.with_overrides(
            {
                "openai_base_url": simulator.base_url,
                "upstream_is_simulator": True,
                # The simulator speaks h2c: one TCP connection carries every parallel stream.
                "http": {"http2_prior_knowledge": True},
            }
        )
    return settings


BACKEND_AI = _backend_ai_settings()

# No sessions, forms or signed cookies: a per-process random key is enough unless one is given.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or get_random_secret_key()
DEBUG = os.environ.get("DJANGO_DEBUG", "").lower() in ("1", "true", "yes")
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
    if h.strip()
]

INSTALLED_APPS: list[str] = []
# No GZipMiddleware: it would buffer and compress the event stream. No CSRF middleware: the
# routes are a JSON API (the views are CSRF-exempt anyway, for projects that keep it).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "django_app.urls"
WSGI_APPLICATION = "django_app.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}
