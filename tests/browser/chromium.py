"""Where the browser tests find a chromium, and what they do when there is none.

Playwright's own browser download does not work everywhere (nor here), so the tests drive a
chromium that is already installed. It is looked for in this order: the executable named by
``BACKEND_AI_CHROMIUM``, then ``chromium``, ``chromium-browser`` and ``google-chrome`` on
``PATH`` (Debian, Ubuntu and Google's package names). Without one the browser tests are skipped
with a reason that says how to get one — except under ``CI=true``, where a missing browser is a
failure: CI installs chromium, so its absence there is a broken set-up, not a choice.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

__all__ = ["ENV_VAR", "PATH_NAMES", "find_chromium", "missing_reason"]

ENV_VAR = "BACKEND_AI_CHROMIUM"
PATH_NAMES = ("chromium", "chromium-browser", "google-chrome")


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_chromium(environ: Mapping[str, str] | None = None) -> str | None:
    """The chromium executable to drive, or None when none is installed."""
    env = os.environ if environ is None else environ
    chosen = env.get(ENV_VAR, "").strip()
    if chosen and _executable(chosen):
        return chosen
    search_path = env.get("PATH", os.defpath)
    for name in PATH_NAMES:
        found = shutil.which(name, path=search_path)
        if found:
            return found
    return None


def missing_reason(environ: Mapping[str, str] | None = None) -> str:
    """Why no chromium was found, and how to provide one."""
    env = os.environ if environ is None else environ
    chosen = env.get(ENV_VAR, "").strip()
    tried = f"{ENV_VAR}={chosen!r} is not an executable; " if chosen else f"{ENV_VAR} unset; "
    return (
        f"no chromium found ({tried}none of {', '.join(PATH_NAMES)} on PATH): install one "
        f"(apt-get install chromium) or point {ENV_VAR} at a chromium or chrome executable"
    )
