"""gunicorn configuration for backend_ai, picked up by ``gunicorn`` run from this directory.

The settings and hooks live in the package (``backend_ai/app/gunicorn_conf.py``, documented
there) so that ``backend-ai serve`` finds them in an installed wheel too; this file only
re-exports them: ``gunicorn`` alone, from the repository root, serves the app.
"""

from backend_ai.app.gunicorn_conf import *  # noqa: F403
