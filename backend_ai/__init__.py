"""backend_ai: several LLM streams at once for sync Python backends, served as one SSE stream."""

__version__ = "0.1.0"
__all__ = ["__version__"]
