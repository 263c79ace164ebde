"""The scenario app on Django, one project for both servers.

``gunicorn tests.apps.django_app.wsgi:application`` (WSGI) and
``uvicorn tests.apps.django_app.asgi:application`` (ASGI).
"""
