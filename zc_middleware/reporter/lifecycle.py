"""Every reporter of this process: reset in a forked child, closed when the interpreter exits."""

from __future__ import annotations

import atexit
import os
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sender import Reporter

__all__ = ["track"]

# Weak: a reporter a test or a script dropped must not be kept alive (nor closed at exit) by this set.
_instances: weakref.WeakSet[Reporter] = weakref.WeakSet()


def track(reporter: Reporter) -> None:
    """Reset ``reporter`` after ``fork`` and close it at exit, for as long as it lives."""
    _instances.add(reporter)


def _after_fork() -> None:
    # The child inherits the parent's thread object and locks, but not the thread itself.
    for reporter in list(_instances):
        reporter._reset()


def _close_all() -> None:
    for reporter in list(_instances):
        if reporter._thread is not None:
            reporter.close()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_close_all)
