"""The pages threadcast serves: the demo page `/` (screenshots saved under test-artifacts/),
the two-threads page, and count.js."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import UpProcess

from .conftest import ARTIFACTS, Api, post_item, wait_live


@pytest.fixture(scope="module")
def welcome(server: UpProcess) -> dict:
    """The seeded demo thread, with a small conversation in it."""
    api = Api(server.base_url)
    thread = api.thread("welcome")
    first = api.post(thread["id"], "<p>First! This updates <b>live</b> in every open window.</p>", author="Ada")
    api.post(thread["id"], "Open a second window and reply: it shows up here at once.", author="Grace", parent_id=first["id"])
    api.post(thread["id"], "Links work too: <a href=\"https://example.org/\">example.org</a>", author="Linus")
    return thread


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_demo_page_embeds_the_welcome_thread(server: UpProcess, welcome: dict, new_context, scheme: str):
    page = new_context(color_scheme=scheme, viewport={"width": 900, "height": 1100}).new_page()
    page.goto(server.base_url + "/")
    wait_live(page)
    expect(page.locator(".tc-item")).to_have_count(3)
    expect(page.locator(".tc-title")).to_have_text("3 comments")
    expect(page.locator("a[data-threadcast-count]")).to_have_text("3 comments")  # count.js
    assert page.locator(".tc-replies .tc-author").all_inner_texts() == ["Grace"]
    background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert (background == "rgb(13, 17, 23)") == (scheme == "dark")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"demo-{scheme}.png", full_page=True)


def test_two_threads_page_keeps_threads_apart(server: UpProcess, new_context):
    api = Api(server.base_url)
    left = api.thread("two-threads-left")
    for n in range(2):
        api.post(left["id"], f"left {n}")
    page = new_context().new_page()
    page.goto(server.base_url + "/static/two-threads.html")
    left_view, right_view = page.locator("#left-thread"), page.locator("#right-thread")
    expect(page.locator(".tc[data-tc-state=live]")).to_have_count(2)
    expect(page.locator("[data-threadcast-count]")).to_have_text(["2 comments", "0 comments"])

    right = api.thread("two-threads-right")
    posted = api.post(right["id"], "right, live")
    expect(post_item(page, posted["id"])).to_have_count(1)
    expect(right_view.locator(".tc-item")).to_have_count(1)
    expect(left_view.locator(".tc-item")).to_have_count(2)
    expect(right_view.locator(".tc-title")).to_have_text("1 comment")

    page.evaluate("threadcast.refreshCounts()")
    expect(page.locator("[data-threadcast-count]")).to_have_text(["2 comments", "1 comment"])
