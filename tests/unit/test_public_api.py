"""The engine's public names, its older import path, and the import rules between packages."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import backend_ai.streaming as streaming
from backend_ai.errors import BackendAIError, ConfigError, LifecycleError

PACKAGE_ROOT = Path(streaming.__file__).resolve().parents[1]

#: What the README, docs/ and examples/ show a user calling from the package root (or from
#: its older path, ``backend_ai.app.services.parallel_streaming``); the rest of the engine is
#: imported from its own modules.
DOCUMENTED_NAMES = {
    "StreamConfig",
    "RunOptions",
    "ParallelStreamManager",
    "create_parallel_stream",
    "optimize_stream_config",
    "get_stream_performance_stats",
    "get_http_client",
    "build_http_client",
    "PoolSettings",
}

# What each package may not import: the engine is framework-free and knows nothing of the
# service or the simulator; the simulator stands alone so it can play any upstream.
FORBIDDEN_IMPORTS = {
    "streaming": (
        "backend_ai.app",
        "backend_ai.simulator",
        "backend_ai.integrations",
        "flask",
        "werkzeug",
        "django",
        "gunicorn",
        "hypercorn",
    ),
    "simulator": (
        "backend_ai.app",
        "backend_ai.streaming",
        "backend_ai.integrations",
        "flask",
        "django",
    ),
}


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth of the file (lazy imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violations(package: str) -> list[str]:
    forbidden = FORBIDDEN_IMPORTS[package]
    found = []
    for path in sorted((PACKAGE_ROOT / package).rglob("*.py")):
        for name in sorted(imported_modules(path)):
            if any(name == bad or name.startswith(bad + ".") for bad in forbidden):
                found.append(f"{path.relative_to(PACKAGE_ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN_IMPORTS))
def test_package_keeps_to_its_layer(package: str) -> None:
    assert violations(package) == []


def test_the_import_rule_checker_sees_lazy_imports(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text("def f():\n    from backend_ai.app.factory import create_app\n")
    assert "backend_ai.app.factory" in imported_modules(source)


def test_the_package_root_exports_what_users_call_and_nothing_else() -> None:
    assert set(streaming.__all__) == DOCUMENTED_NAMES
    public = {name for name in vars(streaming) if not name.startswith("_")}
    submodules = {name for name in public if inspect.ismodule(getattr(streaming, name))}
    assert public - submodules == DOCUMENTED_NAMES
    for name in DOCUMENTED_NAMES:
        assert callable(getattr(streaming, name))


def test_older_import_path_reexports_the_public_api_and_nothing_else() -> None:
    import backend_ai.app.services.parallel_streaming as older

    public = {name for name in vars(older) if not name.startswith("_")}
    assert public == set(streaming.__all__)
    for name in streaming.__all__:
        assert getattr(older, name) is getattr(streaming, name)


def test_errors_share_one_root() -> None:
    assert issubclass(ConfigError, BackendAIError)
    assert issubclass(LifecycleError, BackendAIError)


def in_a_fresh_interpreter(code: str) -> str:
    """What ``code`` prints when run by a new Python (nothing imported yet); it must succeed."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_the_engine_imports_no_framework_and_starts_nothing() -> None:
    code = (
        "import sys, threading, pkgutil, importlib\n"
        "import backend_ai.streaming as engine\n"
        "import backend_ai.app.services.parallel_streaming\n"
        "for info in pkgutil.iter_modules(engine.__path__):\n"
        "    importlib.import_module(f'backend_ai.streaming.{info.name}')\n"
        "from backend_ai.streaming import http_pool, executor\n"
        "bad = {'flask', 'werkzeug', 'django', 'hypercorn'} & set(sys.modules)\n"
        "assert not bad, bad\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert http_pool._default_pool._client is None, 'client built at import'\n"
        "assert executor._default is None, 'executor built at import'\n"
        "print('ok')\n"
    )
    assert in_a_fresh_interpreter(code) == "ok"


def test_checking_sim_controls_imports_the_simulators_profile_not_its_server() -> None:
    """The service checks every request's ``sim`` controls; the simulator's server (hypercorn,
    trustme, cryptography: tens of milliseconds to import) must not come with them, or the first
    request of each worker would wait for it before its first byte."""
    code = (
        "import sys\n"
        "from backend_ai.app.factory import create_app\n"
        "from backend_ai.app.validation import sim_controls\n"
        "assert sim_controls({'ttft_ms': 5}, field='sim', defaults={}) == {'ttft_ms': 5.0}\n"
        "from backend_ai.simulator import SIM_KEYS, SimKeyError\n"
        "bad = {'hypercorn', 'trustme', 'cryptography'} & set(sys.modules)\n"
        "assert not bad, bad\n"
        "import backend_ai.simulator as simulator\n"
        "assert simulator.SimulatorProcess.__module__ == 'backend_ai.simulator.process'\n"
        "assert set(simulator.__all__) == set(simulator._HOMES)\n"
        "assert all(getattr(simulator, name) is not None for name in simulator.__all__)\n"
        "try:\n"
        "    simulator.no_such_name\n"
        "except AttributeError:\n"
        "    print('ok')\n"
    )
    assert in_a_fresh_interpreter(code) == "ok"
