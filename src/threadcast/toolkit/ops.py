"""The operations endpoints of a runner: /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Checks = dict[str, str]


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a running loop: the runner, not uvicorn, handles SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def ops_app(
    health: Callable[[], Checks],
    readiness: Callable[[], Awaitable[Checks]],
    metrics: Callable[[], Awaitable[bytes]],
) -> Starlette:
    """`health` and `readiness` return "ok" or a problem per check; any problem answers 503."""

    def report(checks: Checks, key: str) -> JSONResponse:
        ok = all(value == "ok" for value in checks.values())
        return JSONResponse({key: ok, "checks": checks}, status_code=200 if ok else 503)

    async def healthz(_: Request) -> JSONResponse:
        return report(health(), "healthy")

    async def readyz(_: Request) -> JSONResponse:
        return report(await readiness(), "ready")

    async def metrics_endpoint(_: Request) -> Response:
        return Response(await metrics(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
        ]
    )


class OpsServer:
    """Serves an ASGI app with uvicorn as a task of the current loop."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False)
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self._address = f"{host}:{port}"

    @property
    def port(self) -> int:
        """The bound port (useful when asked for port 0)."""
        return self._server.servers[0].sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="ops-server")
        while not self._server.started:
            if self._task.done():
                try:
                    self._task.result()
                except SystemExit:  # uvicorn exits when it cannot bind
                    pass
                raise OSError(f"cannot serve the operations endpoints on {self._address}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task
