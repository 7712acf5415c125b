"""Pipelines: a handler built from small stages, each testable alone and reusable."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from threadcast.toolkit.callables import Call, callable_name

if TYPE_CHECKING:
    from threadcast.toolkit.context import Context

Stage = Callable[..., Any]


class Pipeline:
    """`Pipeline(clean, render, compress, publish)` feeds the message to `clean`, its result
    to `render`, and so on; it returns the last stage's result.

    A stage is a sync or async callable `stage(value)` or `stage(value, ctx)`. Sync stages run
    on the event loop: keep them quick (or hand blocking work to `asyncio.to_thread`). A stage
    other than the last that returns None ends the pipeline there (a filter). A pipeline is
    itself a stage, so pipelines nest; `a | b` appends a stage. Use it wherever a handler goes:
    `svc.consumer(queue="q")(Pipeline(...))`, or call it in a test: `await pipeline(value)`.
    """

    def __init__(self, *stages: Stage, name: str | None = None) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = stages
        self._calls = [Call(stage, ("value", "ctx")) for stage in stages]
        self.__name__ = name or "+".join(callable_name(stage) for stage in stages)

    async def __call__(self, value: Any, ctx: Context | None = None) -> Any:
        last = len(self._calls) - 1
        for index, call in enumerate(self._calls):
            value = await call(value, ctx)
            if value is None and index < last:
                return None
        return value

    def __or__(self, stage: Stage) -> Pipeline:
        return Pipeline(*self.stages, stage)

    def __repr__(self) -> str:
        return f"Pipeline({' | '.join(callable_name(stage) for stage in self.stages)})"
