"""The one exception tree of backend_ai.

    BackendAIError
    ├── ConfigError (also ValueError)   bad configuration or bad StreamConfig, raised before any work
    ├── LifecycleError (also RuntimeError)   use of a closed client, executor or manager
    └── SimulatorError   the embedded upstream simulator failed to start or answer

Upstream (SDK, HTTP) failures never surface as exceptions out of a stream: they are translated
once, at the engine boundary, into section ``error`` events with a machine-readable code.
"""

__all__ = ["BackendAIError", "ConfigError", "LifecycleError", "SimulatorError"]


class BackendAIError(Exception):
    """Root of every exception backend_ai raises."""


class ConfigError(BackendAIError, ValueError):
    """A configuration value is invalid; the message says what is wrong and what is allowed."""


class LifecycleError(BackendAIError, RuntimeError):
    """An object was used outside its lifecycle (for example after ``close()``)."""


class SimulatorError(BackendAIError):
    """The upstream simulator could not be started or did not answer."""
