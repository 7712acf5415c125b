"""The embed in a real browser: live comments between two readers, replies, pagination,
idempotent retries, keyboard use, and hostile markup."""

from __future__ import annotations

import json
from functools import partial

import httpx
import pytest
from playwright.sync_api import Request, Route, expect

from tests.e2e.conftest import UpProcess

from .conftest import DEADLINE_MS, Api, OtherSite, open_thread, post_item, submit_comment

HOSTILE = '<img src=x onerror="window.__pwned = 1"> <script>window.__pwned = 2</script> hostile'


@pytest.mark.parametrize("transport", ["eventsource", "longpoll"])
def test_comment_and_reply_reach_the_other_reader_live(server: UpProcess, new_context, transport: str):
    thread = Api(server.base_url).thread(f"live-{transport}")
    alice = open_thread(new_context(), server.base_url, thread["identifier"], transport=transport)
    bob = open_thread(new_context(), server.base_url, thread["identifier"], transport=transport)
    bob.evaluate("window.__notReloaded = true")

    submit_comment(alice, "Alice", "Hello from Alice")
    comment = bob.locator(".tc-list > .tc-item").filter(has_text="Hello from Alice")
    expect(comment).to_have_count(1, timeout=DEADLINE_MS)
    expect(bob.locator(".tc-title")).to_have_text("1 comment")
    assert bob.evaluate("window.__notReloaded") is True
    parent_id = int(comment.get_attribute("data-post-id"))

    comment.get_by_role("button", name="Reply").click()
    reply_form = bob.get_by_role("form", name="Reply to Alice")
    reply_form.get_by_label("Name").fill("Bob")
    reply_form.get_by_label("Reply").fill("Hi Alice, Bob here")
    reply_form.get_by_role("button", name="Reply").click()

    nested = post_item(alice, parent_id).locator(".tc-replies > .tc-item")
    expect(nested).to_have_count(1, timeout=DEADLINE_MS)
    expect(nested).to_contain_text("Hi Alice, Bob here")
    expect(nested.locator(".tc-author")).to_have_text("Bob")
    expect(alice.locator(".tc-title")).to_have_text("2 comments")
    expect(alice.locator(".tc-item")).to_have_count(2)


def test_load_more_pages_older_comments_and_nests_late_parents(server: UpProcess, new_context):
    api = Api(server.base_url)
    thread = api.thread("paged")
    posts = [api.post(thread["id"], f"comment {i}") for i in range(7)]
    reply = api.post(thread["id"], "reply to the first", parent_id=posts[0]["id"])
    page = open_thread(new_context(), server.base_url, thread["identifier"], page_size="3")

    items = page.locator(".tc-item")
    expect(items).to_have_count(3)
    # The reply's parent is on an older page: it waits at the top level until the parent loads.
    expect(page.locator(".tc-list > .tc-item").first).to_have_attribute("data-post-id", str(reply["id"]))
    more = page.get_by_role("button", name="Load more comments")
    more.click()
    expect(items).to_have_count(6)
    more.click()
    expect(items).to_have_count(8)
    expect(more).to_be_hidden()
    expect(post_item(page, posts[0]["id"]).locator(".tc-replies > .tc-item")).to_have_attribute(
        "data-post-id", str(reply["id"])
    )
    shown = page.locator(".tc-list > .tc-item").evaluate_all("items => items.map(i => Number(i.dataset.postId))")
    assert shown == [p["id"] for p in reversed(posts)], "top level: newest first, each once"


def test_a_retried_submission_is_saved_once(server: UpProcess, new_context):
    """The first POST reaches the server but its answer is lost; the reader sends again and
    the same Idempotency-Key makes the server return the saved comment instead of a second one."""
    api = Api(server.base_url)
    thread = api.thread("retry")
    context = new_context()
    keys: list[str | None] = []

    def lose_first_answer(route: Route, request: Request) -> None:
        keys.append(request.headers.get("idempotency-key"))
        if len(keys) == 1:
            route.fetch()  # the server saves the comment...
            route.abort("connectionreset")  # ...and the answer never arrives
        else:
            route.continue_()

    context.route(f"{server.base_url}/api/v1/threads/{thread['id']}/posts", lose_first_answer)
    page = open_thread(context, server.base_url, thread["identifier"])
    submit_comment(page, "Retry", "only once please")
    expect(page.get_by_role("alert")).to_contain_text("try again")
    page.get_by_role("button", name="Post comment").click()

    expect(page.locator(".tc-item")).to_have_count(1)
    expect(page.get_by_role("textbox", name="Comment", exact=True)).to_have_value("")
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]
    assert [p["message"] for p in api.posts(thread["id"])] == ["<p>only once please</p>"]


def test_keyboard_alone_posts_and_replies(server: UpProcess, new_context):
    thread = Api(server.base_url).thread("keyboard")
    page = open_thread(new_context(), server.base_url, thread["identifier"])

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.name") == "author_name"
    page.keyboard.type("Kim")
    page.keyboard.press("Tab")
    page.keyboard.type("Typed without a mouse")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Post comment"
    page.keyboard.press("Enter")
    comment = page.locator(".tc-item").filter(has_text="Typed without a mouse")
    expect(comment).to_have_count(1)

    comment.get_by_role("button", name="Reply").focus()
    page.keyboard.press("Enter")
    # The name is remembered, so focus lands in the reply box; Ctrl+Enter sends.
    assert page.evaluate("document.activeElement.name") == "message"
    page.keyboard.type("And a reply")
    page.keyboard.press("Control+Enter")
    reply = comment.locator(".tc-replies > .tc-item")
    expect(reply).to_contain_text("And a reply")
    assert reply.locator("article").evaluate("article => article === document.activeElement")


def test_hostile_markup_renders_inert(server: UpProcess, new_context):
    """Typed, posted raw to the API, or forged straight onto the edge past the server's
    sanitizer: markup that would run script never does, and never reaches the DOM."""
    api = Api(server.base_url)
    thread = api.thread("hostile")
    page = open_thread(new_context(), server.base_url, thread["identifier"])
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    submit_comment(page, "<b>typed</b>", HOSTILE.replace("hostile", "typed"))
    typed = page.locator(".tc-item").filter(has_text="typed")
    expect(typed).to_have_count(1)
    expect(typed.locator(".tc-message")).to_contain_text("<img src=x onerror=")  # shown as text
    expect(typed.locator(".tc-author")).to_have_text("<b>typed</b>")

    raw = api.post(thread["id"], HOSTILE.replace("hostile", "raw"), author="<img src=x onerror=alert(1)>")
    expect(post_item(page, raw["id"])).to_contain_text("raw")

    forged_post = {
        **raw,
        "id": 10**9,
        "author_name": "forger",
        "message": HOSTILE.replace("hostile", "forged")
        + '<a href="javascript:window.__pwned=3">link</a><svg onload="window.__pwned=4"></svg>'
        + '<iframe src="javascript:alert(5)"></iframe><p onclick="window.__pwned=6">para</p>',
    }
    forged = {"id": "forged-1", "type": "post.created", "channel": f"thread:{thread['id']}", "ts": 0,
              "seq": raw["seq"], "data": forged_post}
    res = httpx.post(f"{server.base_url}/pub/thread:{thread['id']}", content=json.dumps(forged))
    assert res.status_code == 202, res.text
    shown = post_item(page, 10**9)
    expect(shown).to_contain_text("forged")
    expect(shown.locator(".tc-message a")).to_have_text("link")

    assert page.locator(".tc img, .tc script, .tc svg, .tc iframe").count() == 0
    assert page.locator(".tc [onerror], .tc [onload], .tc [onclick]").count() == 0
    assert page.locator(".tc a[href^='javascript']").count() == 0
    shown.locator(".tc-message a").click()
    shown.locator(".tc-message p").last.click()
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []


@pytest.mark.parametrize("transport", ["eventsource", "longpoll"])
def test_embed_works_from_another_origin(server: UpProcess, other_site: OtherSite, new_context, transport: str):
    """A site on another origin embeds threadcast: the API and the push edge are reached
    cross-origin, without credentials."""
    thread = Api(server.base_url).thread(f"cross-origin-{transport}")
    open_page = partial(open_thread, site=other_site, transport=transport)
    reader = open_page(new_context(), server.base_url, thread["identifier"])
    writer = open_page(new_context(), server.base_url, thread["identifier"])
    submit_comment(writer, "Faraway", "posted from another origin")
    expect(reader.locator(".tc-item").filter(has_text="posted from another origin")).to_have_count(1)
