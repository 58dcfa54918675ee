pytest_plugins = ["backend_ai.simulator.pytest_plugin"]
