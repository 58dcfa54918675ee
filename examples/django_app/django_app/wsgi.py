"""WSGI entry point: ``gunicorn --chdir examples/django_app django_app.wsgi``.

Django's application inside the service's access log and send timeout
(``backend_ai.integrations.django.wsgi``).
"""

import os

from backend_ai.integrations.django.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")

application = get_wsgi_application()
