"""Every environment variable backend_ai reads is documented, every documented one is read, and
the documented default of each is the default it has.

What is read comes from the one reader's tables (``backend_ai.app.settings.VARIABLES``, which
takes in the engine's own), not from a list kept here; each entry is proven to reach the setting
it names by setting it. A scan of the source guards the tables themselves: a ``BACKEND_AI_*``
name anywhere in the package that no table declares is a variable read around the reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from backend_ai.app.settings import VARIABLES, Settings
from backend_ai.streaming import environment
from backend_ai.streaming.config import preset_model
from backend_ai.streaming.environment import Variable
from backend_ai.streaming.executor import max_workers_from_env
from backend_ai.streaming.http_pool import PoolSettings

ROOT = Path(__file__).resolve().parents[2]
SERVICE_DOC = ROOT / "docs" / "SERVICE.md"
NAME = re.compile(r"BACKEND_AI_[A-Z0-9_]+")
#: Defaults that depend on the environment itself (documented as the path they are built from).
COMPUTED_DEFAULTS = {"BACKEND_AI_HISTORY_DB"}

DECLARED: dict[str, tuple[str, Variable]] = {v.name: (path, v) for path, v in VARIABLES}


def _names(text: str) -> set[str]:
    """Full variable names only: a name ending in ``_`` is a prefix (``BACKEND_AI_HTTP_*``)."""
    return {name for name in NAME.findall(text) if not name.endswith("_")}


def _prefixes(text: str) -> set[str]:
    return {name for name in NAME.findall(text) if name.endswith("_")}


def named_in_package() -> dict[str, set[str]]:
    """Each ``BACKEND_AI_*`` name (and prefix) the package's source mentions, with its files."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "backend_ai").rglob("*.py")):
        text = path.read_text()
        for name in _names(text) | _prefixes(text):
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


def documented_defaults() -> dict[str, str | None]:
    """The default column of SERVICE.md's variable table: a name's backquoted value, or None.

    A row may name several variables (``A`` / ``B``) with as many values (``1`` / ``2``), or one
    value (or none: "unset", "all") for them all; a row of one variable may remark on its value
    in more backquotes after it.
    """
    defaults: dict[str, str | None] = {}
    for line in SERVICE_DOC.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = line.split("|")
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[1])
        values = re.findall(r"`([^`]*)`", cells[2])
        if not names:
            continue  # another table (routes, error codes)
        if len(names) == 1:
            defaults[names[0]] = values[0] if values else None  # the first, before any remark
        elif len(values) == len(names):
            defaults.update(zip(names, values, strict=True))
        elif len(values) <= 1:
            defaults.update((name, values[0] if values else None) for name in names)
        else:
            raise AssertionError(f"cannot pair the defaults of {line!r}")
    return defaults


def shown(value: Any) -> str | None:
    """A default as the table writes it (``1``/``0`` for flags, ``300`` for 300.0)."""
    if value is None or value == ():
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return json.dumps(dict(value))
    return str(value)


def setting(settings: Settings, path: str) -> Any:
    """``run.deadline_s`` of ``settings``; ``models.simple`` is a key of a mapping."""
    value: Any = settings
    for part in path.split("."):
        value = value[part] if isinstance(value, Mapping) else getattr(value, part)
    return value


#: Values unlike any default, for variables that take text of a given form.
TEXT_SAMPLES = {
    "OPENAI_BASE_URL": "http://127.0.0.1:1/v1",
    "BACKEND_AI_REDIS_URL": "redis://127.0.0.1:1/0",
    "BACKEND_AI_HISTORY_DB": "/tmp/elsewhere.sqlite3",
}


def sample(variable: Variable, default: Any) -> str:
    """A valid value for ``variable`` that differs from its ``default``."""
    parse = variable.parse
    if variable.name in TEXT_SAMPLES:
        return TEXT_SAMPLES[variable.name]
    if parse is environment.flag:
        return "0" if default else "1"
    if parse is environment.integer:
        return str(default + 1 if default is not None else 3)
    if parse is environment.number:
        return str(default * 2)
    if parse in (environment.number_or_off, environment.integer_or_off):
        return "off" if default is not None else "7"
    if parse is environment.comma_list:
        return "a,b"
    if parse is environment.json_object:
        return '{"ttft_ms": 5}'
    if parse is environment.text:
        return "sample-text"
    raise AssertionError(f"no sample for {variable.name}: add one here")


def test_the_scan_finds_the_variables_it_must():
    """Guards the scans: names in the source and in the docs are found, with their files."""
    named = named_in_package()
    assert "backend_ai/streaming/executor.py" in named["BACKEND_AI_MAX_WORKERS"]
    assert "backend_ai/streaming/http_pool.py" in named["BACKEND_AI_HTTP_CONNECT_TIMEOUT"]
    assert "docs/SERVICE.md" in documented()["BACKEND_AI_MAX_WORKERS"]
    assert documented_defaults()["BACKEND_AI_HTTP_CONNECT_TIMEOUT"] == "15"
    assert documented_defaults()["BACKEND_AI_RPM"] is None


def test_each_variable_is_declared_once():
    names = [v.name for _, v in VARIABLES]
    paths = [path for path, _ in VARIABLES]
    assert len(set(names)) == len(names), "a variable is declared twice"
    assert len(set(paths)) == len(paths), "two variables set one setting"


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_each_variable_sets_the_setting_it_names(name: str):
    path, variable = DECLARED[name]
    default = setting(Settings.from_env({}), path)
    raw = sample(variable, default)
    got = setting(Settings.from_env({name: raw}), path)
    assert got == variable.parse(raw)
    assert got != default


#: The variables the engine reads itself (the run options are the service's to read).
ENGINE_READ = sorted(n for n, (p, _) in DECLARED.items() if p.startswith(("http.", "models.")))


@pytest.mark.parametrize("name", ENGINE_READ)
def test_the_engine_reads_its_variables_as_the_service_does(name: str):
    """The engine, used without the service, reads its own variables to the same values."""
    path, variable = DECLARED[name]
    group, field = path.split(".")
    environ = {name: sample(variable, setting(Settings.from_env({}), path))}
    expected = setting(Settings.from_env(environ), path)
    if group == "http":
        assert getattr(PoolSettings.from_env(environ), field) == expected
    else:
        assert preset_model(field, environ) == expected


def test_max_workers_is_read_by_the_engine_as_by_the_service():
    environ = {"BACKEND_AI_MAX_WORKERS": "9"}
    assert max_workers_from_env(environ) == Settings.from_env(environ).max_workers == 9
    assert max_workers_from_env({}) == Settings.from_env({}).max_workers


def test_every_variable_read_is_documented():
    docs = documented()
    missing = sorted(
        name for name in DECLARED if name.startswith("BACKEND_AI_") and name not in docs
    )
    assert not missing, f"read but not documented in docs/: {missing}"


def test_every_documented_variable_is_read():
    """The configuration table lists the package's variables only; the tests' and scripts' own
    switches are documented elsewhere, and read by them."""
    untabled = sorted(set(documented_defaults()) - set(DECLARED))
    assert not untabled, f"in docs/SERVICE.md's table but declared in no table: {untabled}"
    read = set(DECLARED) | mentioned_by_tooling()
    unread = {
        name: sorted(files) for name, files in sorted(documented().items()) if name not in read
    }
    assert not unread, f"documented but read nowhere: {unread}"


def test_no_variable_is_read_around_the_reader():
    """Every ``BACKEND_AI_*`` name in the package is declared in a table (or is a prefix of
    declared names): a name read with ``os.environ`` directly would show up here."""
    declared = set(DECLARED)
    stray = {
        name: sorted(files)
        for name, files in named_in_package().items()
        if name not in declared
        and not (name.endswith("_") and any(d.startswith(name) for d in declared))
    }
    assert not stray, f"named in the package but declared in no table: {stray}"


def test_documented_defaults_are_the_defaults():
    """SERVICE.md's table shows each variable's real default (one default per setting)."""
    table = documented_defaults()
    defaults = Settings.from_env({})
    absent = sorted(set(DECLARED) - set(table))
    assert not absent, f"missing from the table in docs/SERVICE.md: {absent}"
    wrong = {
        name: (table[name], shown(setting(defaults, path)))
        for name, (path, _) in DECLARED.items()
        if name not in COMPUTED_DEFAULTS and table[name] != shown(setting(defaults, path))
    }
    assert not wrong, f"documented default != real default: {wrong}"
