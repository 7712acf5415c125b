"""`threadcast run` in a child process, on the embedded backends of a temporary data folder:
the example webhook notifier, and the built-in services beside an API-only `threadcast up`."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.e2e.conftest import UpProcess
from tests.e2e.test_live import Reader, demo_thread, post
from tests.toolkit.helpers import ChildProcess, wait_until
from tests.toolkit.test_example_webhook import EXAMPLE, SECRET, Receiver, example, post_event
from threadcast.bus.log import Message
from threadcast.bus.sqlite_log import SqliteLog
from threadcast.events import Event
from threadcast.toolkit.codec import encode


async def append_to_log(data_dir: Path, event: Event) -> None:
    """As the outbox relay of another process would."""
    log = SqliteLog(data_dir / "log.db")
    await log.start()
    try:
        await log.append("events", [Message(encode(event), str(event.thread_id), {"event_id": event.event_id})])
    finally:
        await log.close()


async def test_the_example_runs_with_threadcast_run_and_stops_on_sigterm(data_dir):
    ops_port = free_port()
    with Receiver() as receiver:
        env = {"THREADCAST_DATA_DIR": str(data_dir), "WEBHOOK_URL": receiver.url, "WEBHOOK_SECRET": SECRET}
        service = ChildProcess("threadcast", "run", str(EXAMPLE), "--ops-port", str(ops_port), folder=data_dir, env=env)
        try:
            await service.wait_for_output("services started")
            await append_to_log(data_dir, post_event(1))
            await wait_until(lambda: len(receiver.requests) == 1, "the webhook")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops_port}") as ops:
                assert (await ops.get("/healthz")).status_code == 200
                assert (await ops.get("/readyz")).json()["checks"]["log"] == "ok"
                metrics = (await ops.get("/metrics")).text
        finally:
            status = await service.terminate()
    assert status == 0
    [request] = receiver.requests
    headers = request.headers
    assert headers["x-threadcast-event-id"] == "evt-1"
    assert example.verify(SECRET, headers["x-threadcast-timestamp"], request.body, headers["x-threadcast-signature"])
    assert 'threadcast_messages_handled_total{handler="notify",outcome="ok",service="webhooks"} 1.0' in metrics


async def test_the_built_in_services_run_beside_an_api_only_process(tmp_path):
    api = UpProcess(tmp_path / "data", env={"THREADCAST_SERVICES": ""})
    api.start()
    services = ChildProcess(
        "threadcast",
        "run",
        "relay",
        "dispatcher",
        "formatter",
        folder=api.data_dir,
        env={"THREADCAST_DATA_DIR": str(api.data_dir), "THREADCAST_PORT": str(api.port)},
    )
    try:
        await services.wait_for_output("services started")
        thread_id = await demo_thread(api.base_url)
        reader = Reader("sse", api.base_url, f"thread:{thread_id}")
        await reader.ready()
        sent = await post(api.base_url, thread_id, "published by another process")
        [message] = await reader.wait_for(1)
        assert message["data"]["id"] == sent["id"]
        await reader.close()
    finally:
        status = await services.terminate()
        api.stop()
    assert status == 0
