"""The embedded edge's hub: buffers, idempotent publish, resume, fan-out and slow subscribers."""

from __future__ import annotations

import asyncio

import pytest

from threadcast.edge.hub import Hub, Message, Subscription
from threadcast.edge.publisher import EdgeError


class Clock:
    """A settable wall clock for TTL tests."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def drain(sub: Subscription) -> list[bytes]:
    """What the subscription holds right now, without waiting."""
    out: list[bytes] = []
    while (message := sub.get_nowait()) is not None:
        out.append(message.data)
    return out


async def publish_all(hub: Hub, channel: str, *payloads: bytes) -> list[str]:
    return [hub.put(channel, data).id for data in payloads]


async def test_fan_out_in_publish_order_across_channels():
    hub = Hub()
    both = hub.subscribe(["thread:1", "forum:demo"])
    thread_only = hub.subscribe(["thread:1"])
    await hub.publish("thread:1", b"t1", message_id="e1")
    await hub.publish("forum:demo", b"f1", message_id="e2")
    await hub.publish("thread:1", b"t2", message_id="e3")
    received = [await asyncio.wait_for(anext(both), 5) for _ in range(3)]
    assert [(m.channel, m.data) for m in received] == [("thread:1", b"t1"), ("forum:demo", b"f1"), ("thread:1", b"t2")]
    assert drain(thread_only) == [b"t1", b"t2"]
    assert len({m.id for m in received}) == 3


async def test_ids_are_unique_per_hub_instance():
    first, second = Hub(), Hub()
    [a] = await publish_all(first, "c", b"x")
    [b] = await publish_all(second, "c", b"x")
    assert first.boot != second.boot and a != b


async def test_buffer_keeps_the_last_buffer_length_messages():
    hub = Hub(buffer_length=3)
    await publish_all(hub, "c", b"m1", b"m2", b"m3", b"m4", b"m5")
    assert hub.channel_info("c").messages == 3
    assert drain(hub.subscribe(["c"], last_event_id="unknown")) == [b"m3", b"m4", b"m5"]


async def test_buffer_ttl_evicts_old_messages_and_sweep_forgets_idle_channels():
    clock = Clock()
    hub = Hub(buffer_length=10, buffer_ttl=60, clock=clock)
    await publish_all(hub, "c", b"old")
    clock.now += 30
    await publish_all(hub, "c", b"young")
    clock.now += 31
    assert drain(hub.subscribe(["c"], last_event_id="unknown")) == [b"young"]
    clock.now += 60
    hub.sweep()
    assert hub.stats().buffered == 0


async def test_sweep_removes_channels_with_nothing_left():
    clock = Clock()
    hub = Hub(buffer_ttl=10, clock=clock)
    await publish_all(hub, "c", b"x")
    clock.now += 11
    hub.sweep()
    assert hub.channel_info("c") is None and hub.stats().channels == 0


async def test_second_publish_of_a_buffered_message_id_is_dropped():
    hub = Hub(buffer_length=2)
    sub = hub.subscribe(["c"])
    first = hub.put("c", b"v1", message_id="event-1")
    again = hub.put("c", b"v1", message_id="event-1")
    assert again.duplicate and again.id == first.id
    assert drain(sub) == [b"v1"] and hub.channel_info("c").messages == 1
    await hub.publish("c", b"v2", message_id="event-2")
    await hub.publish("c", b"v3", message_id="event-3")  # event-1 leaves the buffer
    assert not hub.put("c", b"v1", message_id="event-1").duplicate
    assert drain(sub) == [b"v2", b"v3", b"v1"]


async def test_same_message_id_on_two_channels_is_two_messages():
    hub = Hub()
    sub = hub.subscribe(["thread:1", "forum:demo"])
    await hub.publish("thread:1", b"x", message_id="event-1")
    await hub.publish("forum:demo", b"x", message_id="event-1")
    assert drain(sub) == [b"x", b"x"]


async def test_resume_replays_what_follows_then_goes_live():
    hub = Hub()
    ids = await publish_all(hub, "c", b"m1", b"m2", b"m3")
    sub = hub.subscribe(["c"], last_event_id=ids[0])
    assert drain(sub) == [b"m2", b"m3"]
    await publish_all(hub, "c", b"m4")
    assert drain(sub) == [b"m4"]
    assert drain(hub.subscribe(["c"], last_event_id=hub.channel_info("c").last_message_id)) == []


async def test_resume_merges_several_channels_in_publish_order():
    hub = Hub()
    [start] = await publish_all(hub, "a", b"a0")
    await publish_all(hub, "b", b"b1")
    await publish_all(hub, "a", b"a2")
    await publish_all(hub, "c", b"not subscribed")
    await publish_all(hub, "b", b"b3")
    assert drain(hub.subscribe(["b", "a"], last_event_id=start)) == [b"b1", b"a2", b"b3"]


async def test_resume_from_an_id_older_than_the_buffer_starts_at_the_oldest_left():
    hub = Hub(buffer_length=2)
    ids = await publish_all(hub, "c", b"m1", b"m2", b"m3", b"m4", b"m5")
    assert drain(hub.subscribe(["c"], last_event_id=ids[0])) == [b"m4", b"m5"]


@pytest.mark.parametrize(
    "last_event_id",
    ["0:0", "another-boot:3", "garbage", "", ":", "x:\u00b2", "x:" + "9" * 5000, "\n"],
)
async def test_unknown_or_malformed_ids_replay_everything_buffered(last_event_id: str):
    hub = Hub()
    await publish_all(hub, "c", b"m1", b"m2")
    assert drain(hub.subscribe(["c"], last_event_id=last_event_id)) == [b"m1", b"m2"]


async def test_ids_from_a_previous_hub_replay_everything_buffered():
    before_restart, after_restart = Hub(), Hub()
    [old_id] = await publish_all(before_restart, "c", b"old")
    await publish_all(after_restart, "c", b"new1", b"new2")
    assert drain(after_restart.subscribe(["c"], last_event_id=old_id)) == [b"new1", b"new2"]


async def test_resume_by_modification_time_replays_later_seconds_only():
    clock = Clock(1_000.0)
    hub = Hub(clock=clock)
    await publish_all(hub, "c", b"at 1000")
    clock.now = 1_000.7
    await publish_all(hub, "c", b"at 1000.7")
    clock.now = 1_001.2
    await publish_all(hub, "c", b"at 1001.2")
    assert drain(hub.subscribe(["c"], modified_since=1_000.0)) == [b"at 1001.2"]
    assert drain(hub.subscribe(["c"], modified_since=0.0)) == [b"at 1000", b"at 1000.7", b"at 1001.2"]


async def test_without_resume_only_new_messages_arrive():
    hub = Hub()
    await publish_all(hub, "c", b"before")
    sub = hub.subscribe(["c"])
    assert drain(sub) == []
    await publish_all(hub, "c", b"after")
    assert drain(sub) == [b"after"]


async def test_get_returns_none_when_nothing_arrives_in_time():
    sub = Hub().subscribe(["c"])
    assert await sub.get(timeout=0.01) is None and not sub.closed


async def test_slow_subscriber_is_dropped_without_blocking_others():
    hub = Hub(max_pending=4)
    slow = hub.subscribe(["c"])
    fast = hub.subscribe(["c"])
    fast_got: list[Message] = []
    for round_ in range(3):
        await publish_all(hub, "c", *[f"{round_}-{n}".encode() for n in range(3)])
        fast_got += [await asyncio.wait_for(fast.get(), 5) for _ in range(3)]
    assert len(fast_got) == 9 and not fast.dropped
    assert slow.dropped and slow.closed
    assert [m async for m in slow] == []  # iteration ends: the client reconnects and resumes
    assert hub.stats().subscribers == 1 and hub.stats().dropped == 1


async def test_replay_does_not_count_against_the_pending_limit():
    hub = Hub(buffer_length=50, max_pending=2)
    await publish_all(hub, "c", *[str(n).encode() for n in range(10)])
    sub = hub.subscribe(["c"], last_event_id="unknown")
    await publish_all(hub, "c", b"live")
    assert not sub.dropped and len(drain(sub)) == 11


async def test_closing_a_subscription_ends_iteration_and_frees_the_channel():
    hub = Hub()
    sub = hub.subscribe(["c"])
    waiting = asyncio.create_task(anext(sub, None))
    await asyncio.sleep(0)
    sub.close()
    assert await asyncio.wait_for(waiting, 5) is None
    assert hub.channel_info("c") is None and hub.stats().subscribers == 0


async def test_close_ends_every_subscription_and_refuses_publishes():
    hub = Hub()
    await hub.start()
    subs = [hub.subscribe([f"c{n}"]) for n in range(3)]
    await hub.close()
    assert all(sub.closed for sub in subs)
    with pytest.raises(EdgeError):
        await hub.publish("c0", b"x", message_id="e")
    with pytest.raises(EdgeError):
        await hub.ping()


async def test_figures():
    hub = Hub()
    sub = hub.subscribe(["a", "b"])
    hub.subscribe(["b"])
    await publish_all(hub, "a", b"1", b"2")
    await publish_all(hub, "b", b"3")
    drain(sub)
    stats = hub.stats()
    assert (stats.channels, stats.subscribers, stats.buffered) == (2, 2, 3)
    assert (stats.published, stats.delivered, stats.dropped) == (3, 3, 0)
    info = hub.channel_info("b")
    assert (info.messages, info.subscribers) == (1, 2)


async def test_many_idle_subscribers_and_a_wide_fan_out():
    hub = Hub()
    idle = [hub.subscribe([f"thread:{n}"]) for n in range(10_000)]
    audience = [hub.subscribe(["forum:big"]) for _ in range(1_000)]
    published = hub.put("forum:big", b"hello")
    assert published.subscribers == 1_000
    assert all(drain(sub) == [b"hello"] for sub in audience)
    assert all(sub.get_nowait() is None for sub in idle)
    assert hub.stats().subscribers == 11_000


async def test_configure_shrinks_buffers_and_applies_the_new_ttl():
    clock = Clock()
    hub = Hub(buffer_length=10, buffer_ttl=100, clock=clock)
    await publish_all(hub, "thread:1", b"1", b"2", b"3", b"4")
    hub.configure(buffer_length=2, buffer_ttl=100)
    replay = hub.subscribe(["thread:1"], modified_since=0)
    assert drain(replay) == [b"3", b"4"]
    replay.close()
    clock.now += 50
    hub.configure(buffer_length=2, buffer_ttl=40)
    assert hub.channel_info("thread:1") is None
    with pytest.raises(ValueError):
        hub.configure(buffer_length=0, buffer_ttl=1)
