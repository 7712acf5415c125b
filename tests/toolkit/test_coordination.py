"""The runner on a coordinator (embedded, two coordinators on one file as two processes
would be): members per service, leader-only timers, the live configuration in `ctx.live`."""

from __future__ import annotations

from pathlib import Path

from tests.toolkit.helpers import wait_until
from threadcast.coord import Coordinator, SessionState, open_coordinator
from threadcast.toolkit import Backends, Context, Service, TestKit


def coordinator(data_dir: Path) -> Coordinator:
    return open_coordinator(f"sqlite:///{data_dir / 'coord.db'}?poll_interval=0.02")


def singleton(runs: list[str], label: str) -> Service:
    svc = Service("janitor")

    @svc.timer(every=0.01, leader="janitor")
    async def sweep(ctx: Context) -> None:
        assert ctx.term is not None and ctx.term.active
        runs.append(label)

    return svc


async def test_only_the_leader_runs_a_leader_timer_and_another_takes_over_when_it_stops(data_dir):
    runs: list[str] = []
    first = TestKit(singleton(runs, "first"), backends=Backends(coord=coordinator(data_dir)))
    second = TestKit(singleton(runs, "second"), backends=Backends(coord=coordinator(data_dir)))
    async with first:
        await wait_until(lambda: "first" in runs, "the first leader's runs")
        async with second:
            await wait_until(lambda: runs.count("first") > 20, "more runs of the leader")
            assert "second" not in runs
            await first.runner.stop()
            await wait_until(lambda: "second" in runs, "the takeover")
            assert runs[runs.index("second") :].count("first") == 0


async def test_each_service_is_a_member_until_the_runner_stops(data_dir):
    observer = coordinator(data_dir)
    await observer.start()
    try:
        async with TestKit(singleton([], "only"), backends=Backends(coord=coordinator(data_dir))) as kit:
            [member] = await observer.members("janitor")
            assert member.info.pid > 0 and kit.runner.backends.coord.state is SessionState.CONNECTED
        assert await observer.members("janitor") == []
    finally:
        await observer.close()


async def test_ctx_live_is_the_newest_live_configuration(data_dir):
    seen: list[int] = []
    svc = Service("reader")

    @svc.timer(every=0.01)
    async def read(ctx: Context) -> None:
        seen.append(ctx.live.channels.buffer_length)

    coord = coordinator(data_dir)
    async with TestKit(svc, backends=Backends(coord=coord)):
        await wait_until(lambda: seen != [], "a first read")
        await coord.set_config("channels.buffer_length", 7)
        await wait_until(lambda: seen[-1] == 7, "the new value")
