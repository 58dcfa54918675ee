"""The one exception tree of backend_ai.

    BackendAIError
    ├── ConfigError (also ValueError)   a bad setting or StreamConfig, raised before any work
    ├── LifecycleError (also RuntimeError)   use of a closed client, executor or manager
    ├── SimulatorError   the embedded upstream simulator failed to start or answer
    └── UpstreamProtocolError   the upstream broke the stream protocol mid-stream
        ├── MalformedChunkError   a chunk that is not valid JSON
        ├── UpstreamStreamError   an error payload in the middle of the stream
        └── IncompleteResponseError   the upstream declared its answer incomplete

Upstream (SDK, HTTP) failures never surface as exceptions out of a stream: they are translated
once, at the engine boundary, into section ``error`` events with a machine-readable code.
"""

__all__ = [
    "BackendAIError",
    "ConfigError",
    "IncompleteResponseError",
    "LifecycleError",
    "MalformedChunkError",
    "SimulatorError",
    "UpstreamProtocolError",
    "UpstreamStreamError",
]


class BackendAIError(Exception):
    """Root of every exception backend_ai raises."""


class ConfigError(BackendAIError, ValueError):
    """A configuration value is invalid; the message says what is wrong and what is allowed."""


class LifecycleError(BackendAIError, RuntimeError):
    """An object was used outside its lifecycle (for example after ``close()``)."""


class SimulatorError(BackendAIError):
    """The upstream simulator could not be started or did not answer."""


class UpstreamProtocolError(BackendAIError):
    """The upstream broke the streaming protocol; raised and caught inside a section worker."""


class MalformedChunkError(UpstreamProtocolError):
    """A ``data:`` payload that is not valid JSON."""


class UpstreamStreamError(UpstreamProtocolError):
    """The upstream sent an error object in the middle of a stream."""


class IncompleteResponseError(UpstreamProtocolError):
    """The upstream ended the answer as incomplete (the Responses API's ``response.incomplete``)."""
