"""The batch reporter: usage moves from the outbox to ``POST {base}/v1/usage/batch``, one module per job.

==============  ================================================================
``contract``    the request body, and what each answer of the API means (pure)
``delivery``    one batch: post it and act on the answer (sent, retry, dead, bisect)
``sender``      :class:`Reporter`: accepts usage; the background thread leases batches
``owner``       lease owner ids, and whether the process behind one is gone
``lifecycle``   every reporter reset after ``fork`` and closed at exit
``registry``    the process's reporter for given settings
``usage``       :func:`report_usage`, for application code
==============  ================================================================
"""

from __future__ import annotations

from .contract import api_reason as api_reason
from .contract import retry_after as retry_after
from .registry import get_reporter, reporter_for
from .sender import Reporter
from .usage import report_usage

__all__ = ["Reporter", "get_reporter", "report_usage", "reporter_for"]
