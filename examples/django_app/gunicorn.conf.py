"""gunicorn settings for the example, read by ``gunicorn django_app.wsgi`` run in this folder.

They are the service's own (``backend_ai/app/gunicorn_conf.py``, which says why each value):
gthread workers, since each open stream holds one request thread for its whole life, and the
hooks that end open streams with ``done`` on a graceful stop and close each worker's pooled
HTTP client and threads at exit — they find the Django integration's service as well as the
Flask app's. Run from the repository root, ``gunicorn --chdir examples/django_app
django_app.wsgi`` reads the root ``gunicorn.conf.py`` instead, which holds the same values.
"""

from backend_ai.app.gunicorn_conf import *  # noqa: F403

wsgi_app = "django_app.wsgi"
