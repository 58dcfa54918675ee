"""The public names of the engine, and that importing it pulls in no web framework."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import backend_ai.app.performance_monitor as performance_monitor
import backend_ai.app.services.parallel_streaming as parallel_streaming
from backend_ai.errors import BackendAIError, ConfigError, LifecycleError

MISSION_NAMES = {
    "StreamConfig",
    "ParallelStreamManager",
    "create_parallel_stream",
    "optimize_stream_config",
    "get_stream_performance_stats",
    "get_http_client",
}

ENGINE_MODULES = sorted(
    f"{parallel_streaming.__name__}.{info.name}"
    for info in pkgutil.iter_modules(parallel_streaming.__path__)
)


def test_mission_names_are_exported():
    assert set(parallel_streaming.__all__) >= MISSION_NAMES
    for name in MISSION_NAMES:
        assert callable(getattr(parallel_streaming, name))


def test_every_exported_name_exists_once():
    exported = parallel_streaming.__all__
    assert len(exported) == len(set(exported))
    for name in exported:
        assert hasattr(parallel_streaming, name), name


def test_exported_names_are_the_whole_public_surface():
    public = {
        name
        for name in vars(parallel_streaming)
        if not name.startswith("_") and name not in {"annotations"}
    }
    submodules = {name.rsplit(".", 1)[1] for name in ENGINE_MODULES}
    assert public - submodules == set(parallel_streaming.__all__)


def test_performance_timer_is_exported():
    assert performance_monitor.__all__ == ["PerformanceTimer"]
    assert callable(performance_monitor.PerformanceTimer)


def test_service_imports_stay_available():
    from backend_ai.app.services.parallel_streaming.http_pool import (  # noqa: F401
        HttpClientPool,
        PoolSettings,
    )


@pytest.mark.parametrize("module_name", ENGINE_MODULES)
def test_every_module_declares_all(module_name):
    module = importlib.import_module(module_name)
    assert isinstance(module.__all__, list)
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name}"


def test_errors_share_one_root():
    assert issubclass(ConfigError, BackendAIError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(LifecycleError, BackendAIError)
    assert issubclass(LifecycleError, RuntimeError)
    assert parallel_streaming.ConfigError is ConfigError


def test_importing_the_engine_imports_no_flask_and_starts_nothing():
    code = (
        "import sys, threading\n"
        "import backend_ai.app.services.parallel_streaming as ps\n"
        "import backend_ai.app.performance_monitor\n"
        "from backend_ai.app.services.parallel_streaming import http_pool, executor\n"
        "assert 'flask' not in sys.modules, 'flask imported'\n"
        "assert 'werkzeug' not in sys.modules, 'werkzeug imported'\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert http_pool._default_pool._client is None, 'client built at import'\n"
        "assert executor._default is None, 'executor built at import'\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
