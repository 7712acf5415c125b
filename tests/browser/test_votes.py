"""Votes in a real browser: one reader votes, another sees the score change live; keyboard use;
vote messages (seq 0) are applied idempotently and never taken for posts or holes."""

from __future__ import annotations

import json

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import UpProcess

from .conftest import Api, open_thread, post_item


def score(page: Page, post_id: int):
    return post_item(page, post_id).locator(".tc-score").first


def vote_button(page: Page, post_id: int, name: str):
    return post_item(page, post_id).get_by_role("button", name=name).first


@pytest.mark.parametrize("transport", ["eventsource", "longpoll"])
def test_a_vote_reaches_the_other_reader_live(server: UpProcess, new_context, transport: str):
    api = Api(server.base_url)
    thread = api.thread(f"votes-{transport}")
    post = api.post(thread["id"], "vote on me")
    alice = open_thread(new_context(), server.base_url, thread["identifier"], transport=transport)
    bob = open_thread(new_context(), server.base_url, thread["identifier"], transport=transport)
    bob.evaluate("window.__notReloaded = true")
    expect(score(bob, post["id"])).to_have_text("0")

    alice.locator("form.tc-form").first.get_by_label("Name").fill("Alice")
    vote_button(alice, post["id"], "Upvote").click()
    expect(vote_button(alice, post["id"], "Upvote")).to_have_attribute("aria-pressed", "true")
    expect(score(alice, post["id"])).to_have_text("1")
    expect(score(bob, post["id"])).to_have_text("1")

    vote_button(alice, post["id"], "Downvote").click()  # turns the vote
    expect(score(bob, post["id"])).to_have_text("-1")
    httpx.post(f"{server.base_url}/api/v1/posts/{post['id']}/votes", json={"voter": "carol", "value": 1})
    expect(score(bob, post["id"])).to_have_text("0")
    expect(score(alice, post["id"])).to_have_text("0")
    vote_button(alice, post["id"], "Downvote").click()  # pressed again: taken back
    expect(vote_button(alice, post["id"], "Downvote")).to_have_attribute("aria-pressed", "false")
    expect(score(bob, post["id"])).to_have_text("1")

    [saved] = api.posts(thread["id"])
    assert (saved["score"], saved["upvotes"], saved["downvotes"]) == (1, 1, 0)
    # A vote is not a comment: nothing new was listed, counted or announced on the other page.
    expect(bob.locator(".tc-item")).to_have_count(1)
    expect(bob.locator(".tc-title")).to_have_text("1 comment")
    expect(bob.locator(".tc-bar")).to_be_hidden()
    assert bob.evaluate("window.__notReloaded") is True


def test_voting_by_keyboard_asks_for_a_name_first(server: UpProcess, new_context):
    api = Api(server.base_url)
    thread = api.thread("votes-keyboard")
    post = api.post(thread["id"], "vote by keyboard")
    page = open_thread(new_context(), server.base_url, thread["identifier"])

    vote_button(page, post["id"], "Upvote").focus()
    page.keyboard.press("Enter")
    expect(page.locator("form.tc-form .tc-error").first).to_have_text("Please enter your name to vote.")
    assert page.evaluate("document.activeElement.name") == "author_name"
    expect(score(page, post["id"])).to_have_text("0")

    page.keyboard.type("Kim")
    vote_button(page, post["id"], "Downvote").focus()
    page.keyboard.press("Space")
    expect(score(page, post["id"])).to_have_text("-1")
    expect(vote_button(page, post["id"], "Downvote")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("group", name="Votes")).to_have_count(1)
    [saved] = api.posts(thread["id"])
    assert saved["score"] == -1


def test_vote_messages_apply_once_newest_first_and_wait_for_their_post(server: UpProcess, new_context):
    """Messages pushed straight onto the edge, as a redelivery or a reordering would bring them."""
    api = Api(server.base_url)
    thread = api.thread("vote-messages")
    post = api.post(thread["id"], "scored")
    page = open_thread(new_context(), server.base_url, thread["identifier"])
    expect(post_item(page, post["id"])).to_have_count(1)

    def push(message_id: str, kind: str, data: dict) -> None:
        message = {"id": message_id, "type": kind, "channel": f"thread:{thread['id']}", "ts": 0,
                   "seq": data.get("seq", 0), "data": {"thread_id": thread["id"], **data}}
        res = httpx.post(f"{server.base_url}/pub/thread:{thread['id']}", content=json.dumps(message))
        assert res.status_code == 202, res.text

    def tally(post_id: int, points: int, version: int) -> dict:
        return {"post_id": post_id, "score": points, "score_version": version}

    push("vote-a", "vote.created", tally(post["id"], 4, 20))
    push("vote-a-again", "vote.created", tally(post["id"], 4, 20))  # the same vote, another id
    push("vote-older", "vote.deleted", tally(post["id"], 9, 19))  # overtaken: ignored
    expect(score(page, post["id"])).to_have_text("4")

    unseen = 10**9
    push("vote-early", "vote.created", tally(unseen, 7, 3))  # its post is not on the page yet
    push("post-late", "post.created", {**post, "id": unseen, "message": "late", "score": 0, "score_version": 0})
    expect(score(page, unseen)).to_have_text("7")
    expect(score(page, post["id"])).to_have_text("4")
    expect(page.locator(".tc-item")).to_have_count(2)
    expect(page.locator(".tc-title")).to_have_text("1 comment")
