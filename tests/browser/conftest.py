"""Browser tests: Debian's Chromium driven by Playwright for Python against `threadcast up`.

Playwright never downloads a browser here: it launches the executable `dev/browser/service env`
names (THREADCAST_TEST_CHROMIUM, default /usr/bin/chromium). Pages are host pages made up by
the test (served through Playwright's routing at the server's own origin) that embed the real
/static/threadcast.js, so the script, the API and the push edge are all the real ones.
"""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.conftest import free_port
from tests.e2e.conftest import UpProcess

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEADLINE_MS = 10_000
"""How long a page may take to show what it should (generous: a noisy 2-core machine)."""
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>host page</title></head>
<body>
<div id="threadcast_thread" {attributes}></div>
<script src="{script}"></script>
</body></html>"""


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    # Package scope: Playwright's sync API keeps an event loop running in this thread until it
    # stops, and the asyncio tests of the other packages need the thread free of it.
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(
        executable_path=os.environ.get("THREADCAST_TEST_CHROMIUM", "/usr/bin/chromium"), args=CHROMIUM_ARGS
    )
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    """One `threadcast up` for a module's tests; each test uses threads of its own."""
    process = UpProcess(tmp_path_factory.mktemp("browser") / "up")
    process.start()
    yield process
    process.stop()


class OtherSite:
    """Another origin (a second loopback port) serving host pages: a site embedding threadcast."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = pages.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write((body or "not found").encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def other_site() -> Iterator[OtherSite]:
    site = OtherSite()
    yield site
    site.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Make browser contexts (separate readers: no shared storage); all closed after the test."""
    contexts: list[BrowserContext] = []

    def make(**options: object) -> BrowserContext:
        context = browser.new_context(**options)
        context.set_default_timeout(DEADLINE_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


class Api:
    """The threadcast HTTP API, for setting up threads and posting as another reader would."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def thread(self, identifier: str, forum: str = "demo") -> dict:
        res = httpx.post(f"{self.base_url}/api/v1/threads", json={"forum": forum, "identifier": identifier})
        assert res.status_code in (200, 201), res.text
        return res.json()

    def post(self, thread_id: int, message: str, author: str = "api", parent_id: int | None = None) -> dict:
        body: dict[str, object] = {"author_name": author, "message": message}
        if parent_id is not None:
            body["parent_id"] = parent_id
        res = httpx.post(f"{self.base_url}/api/v1/threads/{thread_id}/posts", json=body)
        assert res.status_code == 201, res.text
        return res.json()

    def posts(self, thread_id: int) -> list[dict]:
        res = httpx.get(f"{self.base_url}/api/v1/threads/{thread_id}/posts", params={"limit": 200})
        assert res.status_code == 200, res.text
        return res.json()["posts"]


def open_thread(
    context: BrowserContext, base_url: str, identifier: str, site: OtherSite | None = None, **data: str
) -> Page:
    """Open a host page embedding thread `identifier` of forum demo; wait until it is live.
    The page is served by `site` or else (through Playwright's routing) at threadcast's own
    origin; the script comes from `base_url`. `data` become more data attributes of the thread
    element (page_size -> data-page-size)."""
    attributes = {"forum": "demo", "identifier": identifier, **data}
    rendered = " ".join(
        f'data-{name.replace("_", "-")}="{html.escape(value)}"' for name, value in attributes.items()
    )
    path = f"/host/{identifier}"
    body = HOST_PAGE.format(attributes=rendered, script=f"{base_url}/static/threadcast.js")
    if site is not None:
        site.pages[path] = body
        url = site.url + path
    else:
        url = base_url + path
        context.route(url, lambda route: route.fulfill(content_type="text/html", body=body))
    page = context.new_page()
    page.goto(url)
    wait_live(page)
    return page


def wait_live(page: Page, timeout: float = DEADLINE_MS) -> None:
    expect(page.locator(".tc[data-tc-state=live]")).to_have_count(1, timeout=timeout)


def post_item(page: Page, post_id: int):
    return page.locator(f".tc-item[data-post-id='{post_id}']")


def submit_comment(page: Page, author: str, message: str) -> None:
    form = page.locator("form.tc-form").first
    form.get_by_label("Name").fill(author)
    form.get_by_label("Comment").fill(message)
    form.get_by_role("button", name="Post comment").click()
