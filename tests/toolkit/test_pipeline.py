"""Pipelines compose small stages, sync or async, with or without the context."""

from __future__ import annotations

import gzip

import pytest

from tests.toolkit.helpers import Job
from threadcast.toolkit import Context, Pipeline, Service, TestKit


def clean(text: str) -> str:
    return " ".join(text.split())


async def render(text: str) -> bytes:
    return f"<p>{text}</p>".encode()


def compress(html: bytes) -> bytes:
    return gzip.compress(html)


async def test_stages_run_in_order_each_on_the_previous_result():
    pipeline = Pipeline(clean, render, compress)
    assert gzip.decompress(await pipeline("  hello \n world ")) == b"<p>hello world</p>"


async def test_pipelines_nest_and_extend_with_a_pipe():
    front = Pipeline(clean, render)
    assert await Pipeline(front, compress)(" a  b ") == await (front | compress)(" a  b ")
    assert (front | compress).stages == (clean, render, compress)


async def test_a_stage_returning_none_ends_the_pipeline():
    reached = []

    def only_short(text: str) -> str | None:
        return text if len(text) < 5 else None

    pipeline = Pipeline(only_short, reached.append)
    assert await pipeline("a long text") is None
    await pipeline("ok")
    assert reached == ["ok"]


async def test_stages_that_take_a_context_get_the_handlers_context():
    svc = Service("pipes")
    published = []

    def to_channel(job: Job) -> tuple[str, bytes]:
        return f"thread:{job.key}", job.id.encode()

    async def publish(message: tuple[str, bytes], ctx: Context) -> None:
        channel, data = message
        await ctx.push(channel, data)
        published.append(ctx.event_id)

    svc.consumer(queue="jobs", model=Job)(Pipeline(to_channel, publish, name="deliver"))
    async with TestKit(svc) as kit:
        await kit.send_to_queue("jobs", Job("j1", key=7), message_id="e1")
        await kit.drain()
        assert kit.edge.messages("thread:7") == [b"j1"]
        assert published == ["e1"]
        assert kit.metric("threadcast_messages_out_total", service="pipes", handler="deliver") == 1


def test_a_stage_must_take_one_or_two_arguments():
    def three(a, b, c): ...

    with pytest.raises(TypeError, match="three takes 3 positional arguments"):
        Pipeline(clean, three)
    with pytest.raises(ValueError):
        Pipeline()
