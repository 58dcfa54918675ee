"""``GET /``: the live page (static HTML, CSS and JS shipped in the package, no build step)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

__all__ = ["bp"]

bp = Blueprint("page", __name__)


@bp.get("/")
def index() -> Response:
    response = current_app.send_static_file("index.html")
    # The page is tiny and changes with the package: always revalidate.
    response.headers["Cache-Control"] = "no-cache"
    return response
