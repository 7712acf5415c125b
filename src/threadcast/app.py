"""The web process: API, embedded edge (when configured), demo page, health and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from threadcast.api.edge_auth import build_edge_auth_router
from threadcast.api.errors import BodyLimit, install_error_handlers
from threadcast.api.public_config import build_public_config_router
from threadcast.api.rate_limits import RateLimits, parse_networks
from threadcast.api.routes import build_router
from threadcast.api.stats_routes import build_stats_router
from threadcast.api.votes import build_vote_router
from threadcast.coord import LiveConfig
from threadcast.edge.app import HubCollector, edge_routes
from threadcast.edge.nchan_status import NchanStatusCollector
from threadcast.metrics import POSTS_CREATED, VOTES_CHANGED
from threadcast.store.objects import open_object_store
from threadcast.system import System

STATIC = Path(__file__).with_name("static")
log = structlog.get_logger("app")


class WebApp(FastAPI):
    """The API, with the embedded edge's subscriber requests (`/sub/...`) sent straight to the
    edge's routes, past the API's middleware stack (error pages, CORS, body limit): those wrap
    every message a subscriber is sent, and a long-poll subscriber makes one request per
    message. The edge's responses carry their own CORS headers and JSON errors; publishing
    (`/pub/...`) stays behind the middleware."""

    subscribers: Router | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.subscribers is not None and scope["type"] != "lifespan" and scope["path"].startswith("/sub/"):
            await self.subscribers(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(system: System) -> WebApp:
    """The ASGI app. Its lifespan starts the backends and the system's services."""
    store = open_object_store(system.settings.store_url, system.settings.object_store_root())  # the stats

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await system.start()
        if system.settings.seed_demo:
            thread_id = await system.seed_demo()
            log.info("demo thread ready", thread_id=thread_id)
        yield
        await system.close()
        await store.close()

    app = WebApp(
        title="threadcast",
        version="0.1.0",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    install_error_handlers(app)

    def on_post() -> None:
        POSTS_CREATED.inc()
        system.wake_relay()

    def on_vote() -> None:
        VOTES_CHANGED.inc()
        system.wake_relay()

    def live() -> LiveConfig:
        return system.runner.live.current

    limits = RateLimits(live, parse_networks(system.settings.trusted_proxies))
    app.state.rate_limits = limits  # read by the routes' rate_limit(...) dependencies
    app.include_router(build_router(system.repo, live, on_post))
    app.include_router(build_vote_router(system.repo, live, on_vote))
    app.include_router(build_public_config_router(live))
    app.include_router(build_edge_auth_router(system.settings, limits))
    app.include_router(build_stats_router(store))
    if system.hub is not None:
        routes = edge_routes(system.hub, system.settings, live=live, limits=limits)
        app.subscribers = Router([route for route in routes if route.path.startswith("/sub/")])  # type: ignore[attr-defined]
        app.router.routes.extend(route for route in routes if not route.path.startswith("/sub/"))  # type: ignore[attr-defined]

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        checks = system.runner.health()
        if all(v == "ok" for v in checks.values()):
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unhealthy", "checks": checks}, status_code=503)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = await system.runner.readiness()
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    edge_registry = CollectorRegistry()
    nchan = NchanStatusCollector.for_edges(system.settings.edge_url)
    if system.hub is not None:
        edge_registry.register(HubCollector(system.hub))
    if nchan.status_urls:
        edge_registry.register(nchan)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        services = await system.runner.metrics_text()  # the default registry; consumer lag measured now
        if nchan.status_urls:
            await nchan.refresh()  # Nchan's stub status, read now
        return Response(services + generate_latest(edge_registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        return FileResponse(STATIC / "demo.html")

    @app.get("/stats", include_in_schema=False)
    async def stats_page() -> FileResponse:
        return FileResponse(STATIC / "stats.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, limit=2 * system.settings.max_message_bytes + 16 * 1024)
    # The embed runs on other sites: anyone may read and post (no cookies, no credentials).
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type", "Idempotency-Key", "If-None-Match", "If-Modified-Since", "Last-Event-ID"],
        expose_headers=["Etag", "Last-Modified", "Retry-After"],
    )
    return app
