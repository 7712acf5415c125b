"""`GET /api/v1/config/public`: what the embed may know of the live configuration (feature
flags, maintenance, the message size limit), as it is now."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from threadcast.coord import LiveConfig
from threadcast.coord.features import public_flags

MAX_AGE = 5
"""Seconds a browser may keep the answer: a change reaches new page views this late at most."""


class MaintenanceOut(BaseModel):
    enabled: bool
    message: str


class PublicConfigOut(BaseModel):
    features: dict[str, bool] = Field(description="Every flag threadcast knows, and every flag set, with its value.")
    maintenance: MaintenanceOut
    max_message_bytes: int


def build_public_config_router(live: Callable[[], LiveConfig]) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.get("/config/public", response_model=PublicConfigOut, tags=["config"])
    async def public_config(response: Response) -> PublicConfigOut:
        """The live configuration the embed may read; it changes at run time."""
        config = live()
        response.headers["Cache-Control"] = f"public, max-age={MAX_AGE}"
        return PublicConfigOut(
            features=public_flags(config),
            maintenance=MaintenanceOut(enabled=config.maintenance.enabled, message=config.maintenance.message),
            max_message_bytes=config.max_message_bytes,
        )

    return router
