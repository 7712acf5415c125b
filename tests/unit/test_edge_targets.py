"""Where a process publishing over HTTP sends: the live `edges`, else the `edge` members, else
its settings; on the embedded coordinator, a second coordinator standing for the edges."""

from __future__ import annotations

import structlog

from tests.toolkit.helpers import wait_until
from threadcast.config import Settings
from threadcast.coord import LiveConfig, Member, MemberInfo, open_coordinator
from threadcast.edge.http_publisher import HttpEdgePublisher
from threadcast.edge.targets import EdgeTargets, member_edges
from threadcast.system import follow_edges, remote_edge_publisher
from threadcast.toolkit import Backends, Runner


def edge_member(host: str, url: str, seq: int = 0) -> Member:
    return Member(f"m{seq}", "edge", MemberInfo(host=host, pid=1, started_at=0.0, url=url))


def test_a_loopback_url_counts_only_on_its_own_host():
    members = [
        edge_member("here", "http://127.0.0.1:8001", 1),
        edge_member("there", "http://127.0.0.1:8002", 2),
        edge_member("there", "http://10.0.0.2:8000/", 3),
        edge_member("here", "http://localhost:8003", 4),
        edge_member("here", "http://127.0.0.1:8001", 5),
        edge_member("here", "", 6),
    ]
    assert member_edges(members, "here") == ["http://127.0.0.1:8001", "http://10.0.0.2:8000", "http://localhost:8003"]


def test_live_edges_come_first_then_members_then_the_settings_and_each_change_is_logged():
    publisher = HttpEdgePublisher(["http://127.0.0.1:8000"])
    targets = EdgeTargets(publisher, list(publisher.urls), this_host="here")
    with structlog.testing.capture_logs() as logs:
        targets.follow_live(LiveConfig())
        targets.follow_members(
            [edge_member("here", "http://127.0.0.1:8001"), edge_member("here", "http://127.0.0.1:8002")]
        )
        assert publisher.urls == ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
        targets.follow_live(LiveConfig(edges=["nchan+http://127.0.0.1:8080/"]))
        assert publisher.urls == ["http://127.0.0.1:8080"]
        targets.follow_members([])  # hidden by the live edges: no change
        targets.follow_live(LiveConfig())
        assert publisher.urls == ["http://127.0.0.1:8000"]
    changes = [(entry["source"], entry["edges"]) for entry in logs if entry["event"] == "publishing to edges"]
    assert changes == [
        ("settings", ["http://127.0.0.1:8000"]),
        ("edge members", ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]),
        ("live configuration", ["http://127.0.0.1:8080"]),
        ("settings", ["http://127.0.0.1:8000"]),
    ]


async def test_a_service_process_follows_the_edges_that_register_and_leave(data_dir):
    url = f"sqlite:///{data_dir / 'coord.db'}?poll_interval=0.02"
    edges = open_coordinator(url)
    await edges.start()
    publisher = remote_edge_publisher(Settings(edge_url="http://127.0.0.1:8001"))
    runner = Runner([], Backends(coord=open_coordinator(url)))
    follow_edges(runner, publisher)
    try:
        async with runner:
            first = await edges.register("edge", MemberInfo.this_process(url="http://127.0.0.1:9001"))
            await edges.register("edge", MemberInfo.this_process(url="http://127.0.0.1:9002"))
            both = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
            await wait_until(lambda: publisher.urls == both, "both edges")
            await runner.backends.coord.set_config("edges", ["nchan+http://127.0.0.1:8080"])
            await wait_until(lambda: publisher.urls == ["http://127.0.0.1:8080"], "the live edges")
            await runner.backends.coord.set_config("edges", [])
            await wait_until(lambda: publisher.urls == both, "the members again")
            await first.close()
            await wait_until(lambda: publisher.urls == ["http://127.0.0.1:9002"], "the edge that is left")
        assert runner.state == "stopped"
    finally:
        await edges.close()
    assert publisher.urls == ["http://127.0.0.1:9002"]


async def test_with_no_edge_member_a_process_publishes_to_its_settings(data_dir):
    publisher = remote_edge_publisher(Settings(edge_url="http://127.0.0.1:8001"))
    runner = Runner([], Backends(coord=open_coordinator(f"sqlite:///{data_dir / 'coord.db'}")))
    follow_edges(runner, publisher)
    async with runner:
        assert publisher.urls == ["http://127.0.0.1:8001"]
