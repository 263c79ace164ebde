"""``manage.py zeroclick_routes``: every metered URL pattern, by method, with what it costs."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...._text import table
from ....errors import ConfigError
from ....gate import Charge
from ...conf import checking_gate, zeroclick_settings
from ...routing import endpoints, route_name


def describe(charge: Charge) -> str:
    """``api-requests=1, compute-seconds (estimate 30)``, as ``flask zeroclick routes`` writes it."""
    return ", ".join(spec.describe() for spec in charge)


class Command(BaseCommand):
    help = "List the metered URL patterns (decorators and ZEROCLICK['ROUTES'] alike) and their meters."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--urlconf", help="URLconf module (default: ROOT_URLCONF)")

    def handle(self, *args: Any, **options: Any) -> None:
        gate = checking_gate(zeroclick_settings())
        rows = [("route", "name", "method", "meters")]
        try:
            for endpoint in endpoints(options.get("urlconf")):
                route = route_name(gate.settings.routes, endpoint.url_name, endpoint.view_name)
                for method, view in endpoint.views():
                    charge = gate.charge_for(view, route)
                    if charge is not None:
                        rows.append(("/" + endpoint.route, endpoint.view_name or "-", method, describe(charge)))
        except ConfigError as exc:
            raise CommandError(exc.message) from None
        except ImportError as exc:
            raise CommandError(f"cannot import the URLconf: {exc}") from None
        finally:
            gate.close()
        if len(rows) == 1:
            self.stdout.write("No metered routes.")
            return
        self.stdout.write(table(rows))
