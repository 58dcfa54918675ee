import os
from collections.abc import Iterator

import pytest

from backend_ai.app.redis_process import REDIS_SERVER, RedisProcess

pytest_plugins = ["backend_ai.simulator.pytest_plugin"]


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    """A ``redis-server`` of this test only: free port, temporary directory, no persistence.

    Skipped with the reason when the binary is missing, so the README's test command passes
    on a machine without it; under ``CI=true`` (where ``.ci/run`` installs it) that fails.
    """
    if not RedisProcess.available():
        message = f"{REDIS_SERVER!r} is not installed (Debian: apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with RedisProcess() as server:
        yield server
