"""A metered function never runs unchecked: the guard ``@metered`` puts around it, and the request's counter.

``@metered`` marks a view for the adapters to price (:mod:`zc_middleware.meters`)
and wraps it in a guard: before the body runs, the guard reads the request's
:class:`~zc_middleware.usage.Usage` (one ContextVar get) and requires that the
Gate granted the request for a charge that includes every meter of the function
(``Usage.covered``, set when the Gate arms a granted counter: one frozenset
check). Anything else (no middleware, a mounted app
the middleware could not see into, a router matching on more than method and
path, a free view calling a metered helper) raises :class:`ZcError`
(``unchecked``) before the body runs, and the log says how to fix it.

The wrapper keeps what frameworks read off a function: the signature
(``__wrapped__``), annotations evaluated in the function's own module (the
wrapper runs with its globals: FastAPI resolves string annotations from the
endpoint's ``__globals__``), its attributes (``view_class``, Django's coroutine
marker), and its nature: a coroutine function stays one, as do generator and
async generator functions (checked when first iterated, which adapters do with
the counter bound). Calls outside any request are refused too, unless a test
opts in with :func:`zc_middleware.testing.unchecked_calls`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import types
from collections.abc import AsyncIterator, Callable, Generator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ._cache import remember
from .errors import ZcError

if TYPE_CHECKING:
    from .usage import Usage

__all__ = ["VERBS", "counter_var", "guarded", "guarded_partial", "is_guard"]

log = logging.getLogger("zc_middleware")

#: The current request's counter (see :mod:`zc_middleware.usage`); read by every guarded call.
counter_var: ContextVar[Usage | None] = ContextVar("zc_usage_counter", default=None)

#: The handler methods a metered class's guard covers (Starlette's ``HTTPEndpoint``, Django's and Flask's views).
VERBS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")

_GUARD = "__zeroclick_guard__"  # on a guard: (what it guards, its meters)
_natures: dict[object, str] = {}  # the functions of partials (see guarded): their nature
_logged: set[str] = set()  # functions whose refusal was logged: once each


def is_guard(view: object) -> tuple[Callable[..., Any], frozenset[str]] | None:
    """``(guarded function, meters)`` if ``view`` is a guard :func:`guarded` made (not a user's
    ``functools.wraps`` copy of one, which copies its attributes too)."""
    info = getattr(view, _GUARD, None)
    if info is not None and getattr(view, "__code__", None) in _CODES:
        return info  # type: ignore[no-any-return]
    return None


def guarded(view: Callable[..., Any], meters: frozenset[str]) -> Callable[..., Any]:
    """``view`` wrapped so that it refuses to run unless the request was checked for ``meters``.
    A guard is never wrapped twice: guarding one again guards its function for both meter sets."""
    again = is_guard(view)
    if again is not None:
        view, meters = again[0], again[1] | meters
    if isinstance(view, functools.partial):
        guard = guarded_partial(view, meters)
    else:
        guard = _make(view, meters, _nature(view))
        home = getattr(inspect.unwrap(view), "__globals__", None)
        if isinstance(home, dict) and isinstance(guard, types.FunctionType):
            # Closures only, no globals in the guard's code: rebuilt with the function's own globals.
            guard = types.FunctionType(guard.__code__, home, guard.__name__, None, guard.__closure__)
        functools.update_wrapper(guard, view)
    setattr(guard, _GUARD, (view, meters))  # no reference back to the guard: no cycle for the collector
    return guard


_NATURES = ("coroutine", "async generator", "generator", "function")


def guarded_partial(view: functools.partial[Any], meters: frozenset[str]) -> Callable[..., Any]:
    """:func:`guarded` for a partial. Django's ``method_decorator`` decorates a new partial of the bound
    method on every request: the nature of its function is looked up once, and nothing reads the
    guard's attributes but ``__wrapped__`` (the path to the marks)."""
    owner = getattr(view.func, "__func__", view.func)
    nature = _natures.get(owner)
    if nature is None:
        nature = remember(_natures, owner, _nature(view))
    guard = _make(view, meters, nature)
    guard.__wrapped__ = view  # type: ignore[attr-defined]
    return guard


def _nature(func: Callable[..., Any]) -> str:
    if inspect.iscoroutinefunction(func):
        return "coroutine"
    if inspect.isasyncgenfunction(func):
        return "async generator"
    return "generator" if inspect.isgeneratorfunction(func) else "function"


def _make(func: Callable[..., Any], meters: frozenset[str], nature: str) -> Callable[..., Any]:
    """The guard for ``func``, of its ``nature``. Every name the guard uses is a closure variable."""
    get = counter_var.get
    refuse = _refuse
    if nature == "coroutine":

        async def guard_async(*args: Any, **kwargs: Any) -> Any:
            counter = get()
            if counter is None or not meters <= counter.covered:
                refuse(counter, func, meters)
            return await func(*args, **kwargs)

        return guard_async
    if nature == "async generator":

        async def guard_agen(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            counter = get()
            if counter is None or not meters <= counter.covered:
                refuse(counter, func, meters)
            inner = func(*args, **kwargs)
            try:
                sent = None
                while True:
                    try:
                        item = await inner.asend(sent)
                    except StopAsyncIteration:
                        return
                    sent = yield item
            finally:
                await inner.aclose()

        return guard_agen
    if nature == "generator":

        def guard_gen(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            counter = get()
            if counter is None or not meters <= counter.covered:
                refuse(counter, func, meters)
            return (yield from func(*args, **kwargs))

        return guard_gen

    def guard(*args: Any, **kwargs: Any) -> Any:
        counter = get()
        if counter is None or not meters <= counter.covered:
            refuse(counter, func, meters)
        return func(*args, **kwargs)

    return guard


def _refuse(counter: Usage | None, func: Callable[..., Any], meters: frozenset[str]) -> None:
    """The guard's slow path: pass an opted-in test call, else log (once per function) and raise."""
    if counter is not None and counter.unchecked_ok:
        return
    name = str(getattr(func, "__qualname__", None) or getattr(getattr(func, "func", None), "__qualname__", func))
    wanted = ", ".join(sorted(meters))
    if counter is None:
        why = "no ZeroClick middleware checked this request"
        fix = (
            "add the middleware (Starlette/FastAPI: app.add_middleware(ZeroClickMiddleware, ...) last, so it is "
            "outermost; Flask: ZeroClick(app); Django: 'zc_middleware.django.ZeroClickMiddleware' in MIDDLEWARE). "
            "If it is there, it could not see this route: a mounted app wrapped in a middleware that hides its "
            "routes (keep the wrapped app as .app, or add ZeroClickMiddleware to the mounted app itself), or a "
            "route class that picks the endpoint by more than method and path (let its matches() decide, or "
            "route such requests to separate paths). In a unit test, call it inside "
            "zc_middleware.testing.unchecked_calls()"
        )
    elif counter.allow is None:
        why = "this request's route is free"
        fix = f"meter the route's view on {wanted} (@metered on the view, or settings.routes)"
    else:
        missing = ", ".join(sorted(meters - counter.charge.meters))
        why = f"this request was checked for {', '.join(counter.charge.amounts) or 'nothing'}, not {missing}"
        fix = f"meter the route's view on {missing} too (@metered on the view, or settings.routes)"
    message = f"{name} is metered on {wanted} but was called unchecked: {why}; {fix}"
    key = f"{getattr(func, '__module__', '')}.{name}"
    if key not in _logged and len(_logged) < 1024:
        _logged.add(key)
        log.error("zc_middleware: %s", message)
    raise ZcError("unchecked", message)


#: the code of every guard :func:`_make` makes: what tells a guard from a copy of its attributes
_CODES = frozenset(_make(len, frozenset(), nature).__code__ for nature in _NATURES)
