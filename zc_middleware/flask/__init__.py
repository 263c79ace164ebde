"""The Flask extension: ``ZeroClick(app)`` or ``ZeroClick()`` + ``init_app(app)``.

Flask has matched the URL before ``before_request`` runs, so the paid check
happens there, from ``request.endpoint`` and the view Flask will call; a
``Deny`` is returned as the response and the view never runs. Reporting and
settling are the WSGI exchange's (:mod:`zc_middleware.wsgi.exchange`), wrapped around
``app.wsgi_app``: the usage header is written when the status goes to the
server, and the hold is settled when the server closes the body. Not
``response.call_on_close``: werkzeug skips those hooks for
``direct_passthrough`` bodies (``send_file``), which would leave a hold
unsettled for ever.

``record_usage`` works in the view, in everything it calls, in
``after_request``/``teardown_request`` hooks, and in streamed bodies (with
or without ``stream_with_context``): the counter is bound from
``before_request`` until ``app.wsgi_app`` returns, then again around every
step of the body. Usage recorded after the header went out (in a streamed
body, or in ``teardown_request``, which Flask runs after the response has
started) is late, exactly as under Starlette: it goes through the batch
channel, and without an ``api_key`` it is only logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    from flask import Flask, current_app
except ImportError:  # pragma: no cover - exercised by tests/flask/test_flask.py
    raise ImportError("zc_middleware.flask needs Flask: pip install 'zc-middleware[flask]'") from None

from ..errors import ConfigError
from ..gate import Gate
from ..identity import Identify
from ..ledger import Ledger
from ..settings import ZeroClickSettings, settings_from_mapping
from .cli import zeroclick_cli
from .state import KEY, Settle, State, state_of
from .views import route_rows

__all__ = ["ZeroClick", "route_rows", "zeroclick_cli"]


class ZeroClick:
    """The Flask extension. Explicit arguments win over ``app.config["ZEROCLICK"]``, which wins over
    ``ZEROCLICK_*`` environment variables; the app's config is read, never written."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        settings: ZeroClickSettings | Mapping[str, Any] | None = None,
        ledger: Ledger | None = None,
        identify: Identify | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.identify = identify
        if app is not None:
            self.init_app(app)

    def settings_for(self, app: Flask) -> ZeroClickSettings:
        """The validated settings ``app`` gets, from the explicit ones, its config and the environment."""
        if isinstance(self.settings, ZeroClickSettings):
            return self.settings
        return settings_from_mapping(app.config.get("ZEROCLICK"), 'app.config["ZEROCLICK"]', overrides=self.settings)

    def init_app(self, app: Flask) -> None:
        """Check every view's meters now (an unknown meter is a :class:`ConfigError`), then hook in."""
        if KEY in app.extensions:
            raise ConfigError("already_initialised", f"ZeroClick is already set up on app {app.name!r}")
        gate = Gate(self.settings_for(app), ledger=self.ledger, identify=self.identify)
        # Middleware already wrapping app.wsgi_app sits between ours and Flask: no path shortcut.
        state = State(app, gate, shortcut="wsgi_app" not in vars(app))
        try:
            state.validate()
        except Exception:
            if self.ledger is None:
                gate.close()
            raise
        app.extensions[KEY] = state
        # First, like an outermost middleware: nothing else runs for a request the plan does not cover.
        app.before_request_funcs.setdefault(None, []).insert(0, state.hook())
        app.wsgi_app = Settle(app.wsgi_app, gate, state.free)  # type: ignore[method-assign]
        app.cli.add_command(zeroclick_cli)

    def gate_for(self, app: Flask | None = None) -> Gate:
        """The :class:`Gate` of ``app`` (default: the current app)."""
        return state_of(app if app is not None else current_app).gate
