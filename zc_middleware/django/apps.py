"""``INSTALLED_APPS += ["zc_middleware.django"]``: registers the system checks and the ``zeroclick_*`` commands."""

from __future__ import annotations

from django.apps import AppConfig


class ZeroClickConfig(AppConfig):
    name = "zc_middleware.django"
    label = "zeroclick"
    verbose_name = "ZeroClick metering"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registering is the import's side effect
