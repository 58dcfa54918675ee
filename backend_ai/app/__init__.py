"""The web application package.

``create_app`` is imported lazily so that ``backend_ai.app.services.parallel_streaming`` (the
framework-agnostic engine) can be imported without importing Flask.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from backend_ai.app.factory import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
