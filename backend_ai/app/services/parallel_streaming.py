"""The engine's public API under its older import path.

The engine lives in ``backend_ai.streaming``; code written against
``backend_ai.app.services.parallel_streaming`` keeps working through this module, which
re-exports exactly the engine's public names and nothing else. Internals are imported from
their own modules, ``backend_ai.streaming.<module>``.
"""

from backend_ai.streaming import *  # noqa: F403
from backend_ai.streaming import __all__ as __all__
