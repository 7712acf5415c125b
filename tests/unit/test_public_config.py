"""Feature flags and `GET /api/v1/config/public`: what the embed reads, changed at run time."""

from __future__ import annotations

import httpx
import pytest

from tests.toolkit.helpers import wait_until
from threadcast.app import create_app
from threadcast.config import Settings
from threadcast.coord import LiveConfig
from threadcast.coord.features import FEATURES, enabled, public_flags
from threadcast.system import System


def test_a_flag_is_its_default_until_set_and_an_unknown_one_is_off():
    config = LiveConfig()
    assert enabled(config, "long_poll") is FEATURES["long_poll"].default is True
    assert enabled(config, "new_editor") is False
    config = LiveConfig(features={"long_poll": False, "new_editor": True})
    assert (enabled(config, "long_poll"), enabled(config, "new_editor")) == (False, True)
    assert public_flags(config) == {"long_poll": False, "new_editor": True}


@pytest.fixture
async def system(data_dir):
    system = System(Settings(data_dir=data_dir, seed_demo=False), ())
    await system.start()
    yield system
    await system.close()


async def test_the_embed_reads_the_flags_maintenance_and_message_size_as_they_are_now(system):
    transport = httpx.ASGITransport(app=create_app(system))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        first = await client.get("/api/v1/config/public")
        assert first.json() == {
            "features": {"long_poll": True},
            "maintenance": {"enabled": False, "message": ""},
            "max_message_bytes": 65536,
        }
        assert first.headers["cache-control"] == "public, max-age=5"

        coord = system.backends.coord
        await coord.set_config("features.long_poll", False)
        await coord.set_config("features.new_editor", True)
        await coord.set_config("maintenance.message", "back at noon")
        await wait_until(lambda: system.runner.live.current.maintenance.message == "back at noon", "the change")
        now = (await client.get("/api/v1/config/public")).json()
        assert now["features"] == {"long_poll": False, "new_editor": True}
        assert now["maintenance"]["message"] == "back at noon"

        refused = await client.get("/sub/thread:1")  # long-poll, now turned off
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "feature_disabled")
