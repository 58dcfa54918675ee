"""The Flask service: routes that stream runs of the engine (``backend_ai.streaming``) as SSE.

The application factory is ``backend_ai.app.factory.create_app``. This package imports nothing
on its own, so ``backend_ai.app.services.parallel_streaming`` (the engine's older import path)
can be imported without Flask installed.
"""
