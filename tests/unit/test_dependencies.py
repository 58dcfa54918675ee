"""What each part of the package needs installed: one HTTP stack, and extras that match the code.

A package that is "not installed" is simulated for real in a child interpreter:
``sys.modules[name] = None`` makes ``import name`` raise ``ImportError`` (and
``importlib.util.find_spec`` answer None) exactly as for a missing package.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import re
import subprocess
import sys

import pytest

from backend_ai.cli import SUBCOMMANDS
from tests.test_readme import run_usage_example

from .test_public_api import PACKAGE_ROOT, imported_modules

SETUP_CFG = PACKAGE_ROOT.parent / "setup.cfg"

#: Top-level modules of the service's, the batch command's and the tests' packages, and of the
#: older HTTP stack: none of them is needed by the engine or the simulator.
NOT_FOR_THE_ENGINE = (
    "flask",
    "werkzeug",
    "gunicorn",
    "prometheus_client",
    "redis",
    "tqdm",
    "django",
    "httpx",
    "httpcore",
)


def blocking(names: tuple[str, ...] | list[str], code: str) -> str:
    """``code`` run with ``names`` impossible to import, as if not installed."""
    return f"import sys\nfor _name in {list(names)!r}:\n    sys.modules[_name] = None\n" + code


def test_the_package_is_built_on_one_http_stack() -> None:
    """``httpx2`` (the ``openai`` SDK's own) everywhere; ``httpx``/``httpcore`` nowhere."""
    found = [
        f"{path.relative_to(PACKAGE_ROOT)} imports {name}"
        for path in sorted(PACKAGE_ROOT.rglob("*.py"))
        for name in sorted(imported_modules(path))
        if name.split(".")[0] in ("httpx", "httpcore")
    ]
    assert found == []


def test_readme_usage_example_needs_only_the_engine_and_the_simulator() -> None:
    result = run_usage_example(prelude=blocking(NOT_FOR_THE_ENGINE, ""))
    assert result.returncode == 0, result.stderr[-2000:]
    frames = [f for f in result.stdout.split("\n\n") if f.strip()]
    done = json.loads(frames[-1].removeprefix("data: "))
    assert done["type"] == "done"
    assert sorted(done["completed"]) == ["summary", "symbols"]


def _setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    assert parser.read(SETUP_CFG), SETUP_CFG
    return parser


def _requirements(value: str) -> list[tuple[str, list[str]]]:
    """Each requirement line of a ``setup.cfg`` value as (normalised name, its extras)."""
    found = []
    for line in filter(None, (line.strip() for line in value.splitlines())):
        match = re.match(r"([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?", line)
        assert match, line
        extras = [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
        found.append((match.group(1).lower().replace("_", "-"), extras))
    return found


def _extras() -> dict[str, set[str]]:
    """Each extra of ``setup.cfg`` as the distribution names it installs, self-references
    (``backend-ai[a,b]``) expanded."""
    raw = dict(_setup_cfg()["options.extras_require"].items())

    def expand(extra: str) -> set[str]:
        names: set[str] = set()
        for name, inner in _requirements(raw[extra]):
            if name == "backend-ai":
                for each in inner:
                    names |= expand(each)
            else:
                names.add(name)
        return names

    return {extra: expand(extra) for extra in raw}


def _distributions(module: str) -> set[str]:
    """The distributions that install top-level ``module`` here (the dev install has them all)."""
    names = importlib.metadata.packages_distributions().get(module, [])
    return {name.lower().replace("_", "-") for name in names}


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_what_a_command_checks_for_is_what_its_extra_installs(command: str) -> None:
    extras = _extras()
    for need in SUBCOMMANDS[command].needs:
        assert need.extra in extras, f"setup.cfg has no extra {need.extra!r}"
        installed = extras[need.extra]
        covered: set[str] = set()
        for module in need.modules:
            distributions = _distributions(module)
            assert distributions & installed, f"{module} is not installed by [{need.extra}]"
            covered |= distributions
        assert installed <= covered, f"[{need.extra}] installs {installed - covered} unchecked"


def test_the_dev_extra_installs_every_other_runtime_extra() -> None:
    extras = _extras()
    runtime = {"service", "simulator", "redis", "serve", "batch", "django"}
    for extra in runtime:
        assert extras[extra] <= extras["dev"], extra
    assert "httpx" not in extras["serve"] | extras["batch"], "httpx is for the tests only"


def test_the_engine_needs_only_the_sdk_its_http_stack_and_the_protocol_libraries() -> None:
    required = {name for name, _ in _requirements(_setup_cfg()["options"]["install_requires"])}
    assert required == {"openai", "httpx2", "h2", "h11"}


def test_the_engine_imports_without_the_optional_packages() -> None:
    code = blocking(
        (*NOT_FOR_THE_ENGINE, "hypercorn", "trustme"),
        "import backend_ai.app.services.parallel_streaming\nimport backend_ai.streaming\n"
        "from backend_ai.streaming import get_http_client\nprint(type(get_http_client()))\n",
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "<class 'httpx2.Client'>"
