"""The app's blueprints, one per domain; ``ALL`` is what ``create_app`` registers."""

from __future__ import annotations

from flask import Blueprint

from backend_ai.app.blueprints import batch, compare, dream, iching, meta, page, tarot

__all__ = ["ALL"]

ALL: tuple[Blueprint, ...] = (
    page.bp,
    meta.bp,
    dream.bp,
    iching.bp,
    tarot.bp,
    compare.bp,
    batch.bp,
)
