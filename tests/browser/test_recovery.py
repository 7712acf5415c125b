"""An open page recovers what it missed: it survives restarts of `threadcast up` (the embedded
edge with it) and fills holes in the post sequence, showing every comment exactly once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import UpProcess

from .conftest import DEADLINE_MS, Api, open_thread, wait_live

RECOVERY_MS = 45_000
"""The page retries with backoff (at most 15 s apart), so recovery gets a longer deadline."""


API_ONLY = {"THREADCAST_SERVICES": ""}
"""`threadcast up` without the pipeline: posts are saved, nothing is pushed."""


class Restarts:
    """`threadcast up` processes taking turns on one port and one data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.current = UpProcess(data_dir)
        self.current.start()

    def restart(self, env: dict[str, str] | None = None) -> UpProcess:
        self.current.stop()
        following = UpProcess(self.data_dir, env=env)
        following.port, following.base_url = self.current.port, self.current.base_url
        following.start()
        self.current = following
        return following

    def stop(self) -> None:
        self.current.stop()


@pytest.fixture
def restarts(tmp_path: Path) -> Iterator[Restarts]:
    processes = Restarts(tmp_path / "up")
    yield processes
    processes.stop()


def shown_messages(page: Page) -> list[str]:
    return page.locator(".tc-message").all_inner_texts()


def expect_shown_once(page: Page, messages: list[str], timeout: float = DEADLINE_MS) -> None:
    expect(page.locator(".tc-item")).to_have_count(len(messages), timeout=timeout)
    assert sorted(shown_messages(page)) == sorted(messages)


@pytest.mark.parametrize("transport", ["eventsource", "longpoll"])
def test_page_recovers_every_comment_once_across_restarts(restarts: Restarts, new_context, transport: str):
    base_url = restarts.current.base_url
    api = Api(base_url)
    thread = api.thread("restart")
    context = new_context()
    page = open_thread(context, base_url, thread["identifier"], transport=transport)
    page.evaluate("window.__notReloaded = true")
    messages = ["before 1", "before 2"]
    for message in messages:
        api.post(thread["id"], message)
    expect_shown_once(page, messages)

    # Restart without the pipeline: posts are saved but never pushed, so only the API can give
    # them to the page. The reader is offline meanwhile, so the page reconnects only after
    # they are saved (and at once when it is back online).
    context.set_offline(True)
    restarts.restart(env=API_ONLY)
    during = ["during 1", "during 2"]
    for message in during:
        api.post(thread["id"], message)
    messages += during
    expect(page.locator(".tc[data-tc-state=live]")).to_have_count(0)
    context.set_offline(False)
    expect_shown_once(page, messages, timeout=RECOVERY_MS)
    wait_live(page, RECOVERY_MS)

    # The full system again: the relay now publishes the saved posts, which the page already
    # shows and must drop; a post after the restart arrives live.
    restarts.restart()
    wait_live(page, RECOVERY_MS)
    api.post(thread["id"], "after")
    messages.append("after")
    expect_shown_once(page, messages, timeout=RECOVERY_MS)
    expect(page.locator(".tc-title")).to_have_text("5 comments")
    assert page.evaluate("window.__notReloaded") is True


@pytest.fixture
def api_only(tmp_path: Path) -> Iterator[UpProcess]:
    process = UpProcess(tmp_path / "up", env=API_ONLY)
    process.start()
    yield process
    process.stop()


def test_a_hole_in_the_sequence_is_filled_from_the_api(api_only: UpProcess, new_context):
    api = Api(api_only.base_url)
    thread = api.thread("holes")
    page = open_thread(new_context(), api_only.base_url, thread["identifier"])
    posts = [api.post(thread["id"], f"saved {i}") for i in range(3)]
    expect(page.locator(".tc-item")).to_have_count(0)

    # Push only the last post, as an edge that lost the first two would: its seq is 3, the
    # page has seen none, so it fetches the missing ones from the API.
    last = posts[-1]
    message = {"id": "event-3", "type": "post.created", "channel": f"thread:{thread['id']}", "ts": 0,
               "seq": last["seq"], "data": last}
    res = httpx.post(f"{api_only.base_url}/pub/thread:{thread['id']}", content=json.dumps(message))
    assert res.status_code == 202, res.text
    expect_shown_once(page, [f"saved {i}" for i in range(3)])
