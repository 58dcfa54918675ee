"""Every module of the service declares ``__all__``, and every name in it exists."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "backend_ai.app.blueprints",
    "backend_ai.app.blueprints._common",
    "backend_ai.app.blueprints.compare",
    "backend_ai.app.blueprints.dream",
    "backend_ai.app.blueprints.iching",
    "backend_ai.app.blueprints.meta",
    "backend_ai.app.blueprints.page",
    "backend_ai.app.blueprints.tarot",
    "backend_ai.app.child_process",
    "backend_ai.app.extension",
    "backend_ai.app.factory",
    "backend_ai.app.gunicorn_conf",
    "backend_ai.app.gunicorn_process",
    "backend_ai.app.history",
    "backend_ai.app.metrics",
    "backend_ai.app.prompts",
    "backend_ai.app.runs",
    "backend_ai.app.serve",
    "backend_ai.app.settings",
    "backend_ai.app.streaming",
    "backend_ai.app.validation",
    "backend_ai.integrations.django",
    "backend_ai.integrations.django.responses",
    "backend_ai.integrations.django.service",
    "backend_ai.integrations.django.urls",
    "backend_ai.integrations.django.views",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_exports_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    missing = [attr for attr in exported if not hasattr(module, attr)]
    assert not missing


def test_root_gunicorn_conf_is_the_packaged_one() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"
    namespace: dict[str, object] = {}
    exec(compile(root.read_text(), str(root), "exec"), namespace)
    assert namespace["worker_class"] == "gthread"
    assert namespace["wsgi_app"] == "backend_ai.app.factory:create_app()"
    assert callable(namespace["post_worker_init"])
    assert callable(namespace["worker_exit"])
