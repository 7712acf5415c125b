"""The stats page /stats: the range from the stats API, then live minutes from channel stats:{forum},
published for real through the edge's loopback /pub/ endpoint (screenshots under test-artifacts/)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
from playwright.sync_api import Page, expect

from tests.e2e.conftest import UpProcess
from tests.stats_results import Window, write_window

from .conftest import ARTIFACTS


def minute(ago: int) -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=ago)


def thread(server: UpProcess, identifier: str, title: str) -> dict:
    body = {"forum": "demo", "identifier": identifier, "title": title, "url": f"{server.base_url}/#{identifier}"}
    res = httpx.post(f"{server.base_url}/api/v1/threads", json=body)
    assert res.status_code in (200, 201), res.text
    return res.json()


def publish(server: UpProcess, window: Window) -> None:
    message = window.message()
    res = httpx.post(f"{server.base_url}/pub/{message['channel']}", content=json.dumps(message),
                     headers={"Content-Type": "application/json"})
    assert res.status_code == 202, res.text


def open_stats(new_context, server: UpProcess, query: str = "", **options) -> tuple[Page, list[str]]:
    """The stats page, live and loaded; the list collects the page's script errors."""
    page = new_context(viewport={"width": 1200, "height": 1000}, **options).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server.base_url}/stats{query}")
    expect(page.locator("#st-state")).to_have_text("Live")
    expect(page.locator("#stats")).to_have_attribute("data-loaded", "true")
    return page, errors


def top_rows(page: Page):
    return page.locator("#st-top g.st-row")


def test_the_page_shows_the_range_then_updates_live(server: UpProcess, new_context):
    welcome = thread(server, "stats-welcome", "Welcome to the stats")
    tabs = thread(server, "stats-tabs", "Tabs or spaces?")
    objects = server.data_dir / "objects"
    write_window(objects, Window(minute(6), {welcome["id"]: 4, tabs["id"]: 2}, replies=1, votes=3))
    write_window(objects, Window(minute(5), {welcome["id"]: 3}, latency_ms=None))
    write_window(objects, Window(minute(4), {tabs["id"]: 6, 424242: 1}, votes=2))

    page, errors = open_stats(new_context, server)
    bars = page.locator("#st-posts rect.st-bar")
    expect(bars).to_have_count(3)
    assert [bar.get_attribute("data-posts") for bar in bars.all()] == ["6", "3", "7"]
    expect(page.locator("#st-total-posts")).to_have_text("16")
    expect(page.locator("#st-total-votes")).to_have_text("5")
    expect(top_rows(page)).to_have_count(3)
    assert [row.get_attribute("data-thread-id") for row in top_rows(page).all()] == [
        str(tabs["id"]), str(welcome["id"]), "424242"]
    expect(page.locator("#st-latency circle")).to_have_count(4)  # p50 and p99 of two measured minutes
    # The table fallback has the same figures; threads link to their pages.
    expect(page.locator("#st-posts tbody tr")).to_have_count(3)
    expect(page.locator("#st-top tbody tr").first).to_contain_text("Tabs or spaces?")
    expect(page.locator("#st-top tbody tr").first.locator("a")).to_have_attribute("href", tabs["url"])
    assert page.locator("#st-posts svg").get_attribute("aria-label").startswith("Posts per minute, last hour: 16 posts")

    # A minute closes: the topology publishes it on stats:demo.
    newest = Window(minute(3), {tabs["id"]: 20, welcome["id"]: 1}, latency_ms=(40.0, 60.0, 250.0, 300.0))
    publish(server, newest)
    expect(bars).to_have_count(4)
    expect(bars.last).to_have_attribute("data-posts", "21")
    expect(bars.last).to_have_class("st-bar st-fresh")
    expect(page.locator("#st-total-posts")).to_have_text("37")
    expect(page.locator("#st-last-p99")).to_have_text("250 ms")
    expect(top_rows(page).first).to_have_attribute("data-thread-id", str(tabs["id"]))
    expect(top_rows(page).first).to_have_attribute("data-posts", "28")

    # The same minute again, with a late post: it replaces the one shown. A repeat changes nothing.
    late = Window(minute(3), {tabs["id"]: 20, welcome["id"]: 2}, late_events=1)
    publish(server, late)
    publish(server, late)
    expect(bars.last).to_have_attribute("data-posts", "22")
    expect(bars).to_have_count(4)
    expect(page.locator("#st-total-posts")).to_have_text("38")
    expect(top_rows(page).nth(1)).to_have_attribute("data-posts", "9")  # welcome: 4 + 3 + 2

    for chart in ("#st-posts", "#st-top"):
        page.locator(f"{chart} summary").click()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "stats-light.png", full_page=True)
    assert errors == []


def test_the_forum_picker_switches_forums_in_dark_mode(server: UpProcess, new_context):
    objects = server.data_dir / "objects"
    for ago in [*range(30, 15, -1), *range(14, 0, -1)]:  # 15 minutes ago is in "the last 15m" by the second
        write_window(objects, Window(minute(ago), {1: ago % 7 + 1, 2: (ago * 5) % 4}, forum="night",
                                     latency_ms=(20.0 + ago % 5, 35.0, 90.0 + (ago * 13) % 60, 180.0)))

    page, errors = open_stats(new_context, server, "?forum=nobody", color_scheme="dark")
    expect(page.locator("#st-posts .st-empty")).to_have_text("No stats for nobody in the last hour yet")

    page.get_by_role("textbox", name="Forum").fill("night")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#st-posts rect.st-bar")).to_have_count(29)
    assert page.url.endswith("/stats?forum=night&since=1h")
    background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert background == "rgb(13, 17, 23)"

    page.get_by_role("combobox", name="Range").select_option("15m")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#st-posts rect.st-bar")).to_have_count(14)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "stats-dark.png", full_page=True)
    assert errors == []

