"""Settings: one middleware line and the ``ZEROCLICK`` dict (its keys are ZeroClickSettings fields, upper-cased)."""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "paidapi.urls"
INSTALLED_APPS = ["zc_middleware.django"]  # system checks and the zeroclick_* commands
MIDDLEWARE = ["zc_middleware.django.ZeroClickMiddleware"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
TIME_ZONE = "UTC"

ZEROCLICK = {
    "SERVICE_SLUG": "acme-search",
    "METERS": {"api-requests": {}, "compute-seconds": {}},
    "PLANS": {
        "starter": {
            "default": True,
            "includes": {
                "api-requests": {"limit": 3, "reset": "month"},
                "compute-seconds": {"limit": 3600, "reset": "day"},
            },
        }
    },
    # the embedded SQLite ledger; ZEROCLICK_LEDGER points it elsewhere
    "LEDGER": os.environ.get("ZEROCLICK_LEDGER", "sqlite:///zeroclick.db"),
}
