"""Every ``BACKEND_AI_*`` variable the package reads is documented in docs/, and every one docs/
documents is read somewhere (the package, or the tests and scripts for their own switches).

Grep-based on purpose: it checks the text a reader searches, not an import-time registry that
a new reader could bypass. Names built at run time are expanded from the source: a prefix
constant (``"BACKEND_AI_HTTP_"``) joined with the literal names of its ``_env_*`` calls, and the
model presets' ``f"BACKEND_AI_MODEL_{...}"``. Docs must spell every name out in full.
"""

from __future__ import annotations

import re
from pathlib import Path

from backend_ai.app.settings import PRESET_NAMES

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"BACKEND_AI_[A-Z0-9_]+")
PREFIX_CONSTANT = re.compile(r"=\s*\"(BACKEND_AI_[A-Z0-9_]*_)\"")
PREFIXED_READ = re.compile(r"_env_\w+\(\s*\w+,\s*\"([A-Z0-9_]+)\"")
PRESET_READ = '"BACKEND_AI_MODEL_{'


def _names(text: str) -> set[str]:
    """Full variable names only: a name ending in ``_`` is a prefix (``BACKEND_AI_HTTP_*``)."""
    return {name for name in NAME.findall(text) if not name.endswith("_")}


def read_by_package() -> dict[str, set[str]]:
    """Each variable the package mentions, with the files that mention it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "backend_ai").rglob("*.py")):
        text = path.read_text()
        names = _names(text)
        for prefix in PREFIX_CONSTANT.findall(text):
            names |= {prefix + suffix for suffix in PREFIXED_READ.findall(text)}
        if "f" + PRESET_READ in text:
            names |= {f"BACKEND_AI_MODEL_{preset.upper()}" for preset in PRESET_NAMES}
        for name in names:
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def mentioned_by_tooling() -> set[str]:
    """Variables the tests and scripts mention (their own switches, such as the browser's)."""
    names: set[str] = set()
    for folder in ("tests", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.resolve() != Path(__file__).resolve():
                names |= _names(path.read_text())
    return names


def documented() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "docs").rglob("*.md")):
        for name in _names(path.read_text()):
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_scan_finds_the_variables_it_must():
    """Guards the grep itself: a variable read by a prefix and a plain one are both found."""
    read = read_by_package()
    assert "BACKEND_AI_MAX_WORKERS" in read
    assert "BACKEND_AI_HTTP_CONNECT_TIMEOUT" in read
    assert "BACKEND_AI_MODEL_COMPLEX" in read
    assert "BACKEND_AI_MAX_WORKERS" in documented()


def test_every_variable_the_package_reads_is_documented():
    docs = documented()
    missing = {
        name: sorted(files) for name, files in sorted(read_by_package().items()) if name not in docs
    }
    assert not missing, f"read but not documented in docs/: {missing}"


def test_every_documented_variable_is_read():
    read = set(read_by_package()) | mentioned_by_tooling()
    unread = {
        name: sorted(files) for name, files in sorted(documented().items()) if name not in read
    }
    assert not unread, f"documented but read nowhere: {unread}"
