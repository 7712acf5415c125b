"""Calling user code: sync or async callables that take as many of the offered arguments as
they declare. A handler is `handle(message)` or `handle(message, ctx)`; a timer or hook is
`tick()` or `tick(ctx)`; a pipeline stage is `stage(value)` or `stage(value, ctx)`."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any


def positional_arity(fn: Callable[..., Any]) -> int:
    """How many positional arguments `fn` accepts (sys.maxsize with *args)."""
    count = 0
    for param in inspect.signature(fn).parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return sys.maxsize
        if param.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


class Call:
    """`fn`, called with the first arguments it accepts out of those offered; awaited when
    it returns an awaitable."""

    __slots__ = ("fn", "_count")

    def __init__(self, fn: Callable[..., Any], offered: tuple[str, ...]) -> None:
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        arity = positional_arity(fn)
        if arity > len(offered) and arity != sys.maxsize:
            raise TypeError(
                f"{callable_name(fn)} takes {arity} positional arguments; it is called with "
                f"({', '.join(offered)}) at most"
            )
        self.fn = fn
        self._count = min(arity, len(offered))

    async def __call__(self, *args: Any) -> Any:
        result = self.fn(*args[: self._count])
        if inspect.isawaitable(result):
            result = await result
        return result
