"""Settings of the Django scenario app: the same meters, plans and routes as ``tests.apps.common.settings()``."""

from __future__ import annotations

import os

from tests.apps.common import BARE, SCENARIO_PLANS, batch_settings, meters

SECRET_KEY = "scenario-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "tests.apps.django_app.urls"
INSTALLED_APPS = ["zc_middleware.django"]
MIDDLEWARE = [] if BARE else ["zc_middleware.django.ZeroClickMiddleware"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

ZEROCLICK = {
    "SERVICE_SLUG": "acme-search",
    "METERS": meters(),
    "PLANS": SCENARIO_PLANS,
    "ROUTES": {"configured": {"api-requests": 2}, "ab": {"api-requests": 1}},
    "LEDGER": os.environ.get("ZEROCLICK_LEDGER", "sqlite:///zeroclick.db"),
    **{name.upper(): value for name, value in batch_settings().items()},
}
