"""zc_middleware: put paid endpoints behind ZeroClick's metering contract.

One middleware line and one ``@metered("api-requests")`` per paid route; the
plan is checked before the handler runs, a ``402`` with ``X-ZeroClick-Reason``
answers when it cannot cover the action, and successful responses carry
``X-ZeroClick-Usage``.
"""

from __future__ import annotations

from .decision import Allow, Deny
from .errors import ConfigError, ZcError
from .gate import Gate
from .ledger import Balance, Ledger, MeterBalance, open_ledger
from .meters import metered
from .reporter import report_usage
from .settings import ZeroClickSettings
from .usage import Usage, record_usage

__version__ = "0.1.0"

__all__ = [
    "Allow",
    "Balance",
    "ConfigError",
    "Deny",
    "Gate",
    "Ledger",
    "MeterBalance",
    "Usage",
    "ZcError",
    "ZeroClickSettings",
    "__version__",
    "metered",
    "open_ledger",
    "record_usage",
    "report_usage",
]
