"""What the page lets untrusted text do (nothing), and what other origins may call."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.web.conftest import Browsing, open_page
from tests.fakes.openai import FakeOpenAI, Script
from tests.support import AUTH_TOKEN, ServeProcess, base_env, free_port

# An answer that would run code three ways and load a remote image, were it trusted.
HOSTILE = [
    "Here you go:\n\n",
    "<img src=x onerror=\"window.__pwned = 'img'\">\n\n",
    "<script>window.__pwned = 'script'</script>\n\n",
    "Inline <b onmouseover=\"window.__pwned = 'b'\">bold?</b> and ",
    "[a link](javascript:window.__pwned='link') and ![a picture](http://203.0.113.9/x.png)",
    " and [a real link](https://example.com/page).\n\n",
    "| left | right |\n| --- | --- |\n| `code` | **strong** |\n\n",
    "```js\nalert('only shown')\n```\n",
]


def assert_nothing_ran(web: Browsing) -> None:
    body = web.answers().last
    text = body.text_content() or ""
    assert "<img src=x onerror=" in text and "<script>window.__pwned = 'script'</script>" in text
    assert web.page.evaluate("window.__pwned") is None
    for tag in ("img", "script", "b[onmouseover]", "[onerror]"):
        assert body.locator(tag).count() == 0, tag
    assert not [url for url in web.requests if url.rstrip("/").endswith("/x")]
    assert not [url for url in web.requests if "203.0.113.9" in url]
    hrefs = [a.get_attribute("href") for a in body.locator("a").all()]
    assert not [h for h in hrefs if h and h.lower().startswith("javascript")]
    real = body.get_by_role("link", name="a real link")
    assert real.get_attribute("href") == "https://example.com/page"
    assert real.get_attribute("rel") == "noopener noreferrer"
    assert real.get_attribute("target") == "_blank"
    # The Markdown itself did render.
    expect(body.locator("table td code")).to_have_text("code")
    expect(body.locator("pre code")).to_have_text("alert('only shown')")
    # Nothing even tried: the policy never had to refuse anything.
    assert web.violations() == []
    assert web.foreign_requests() == []


def test_hostile_answer_renders_as_text_and_runs_nothing(
    web: Browsing, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(Script(pieces=HOSTILE, gap=0.05))
    web.sign_in()
    web.send("Say something dangerous")
    web.wait_idle()
    assert_nothing_ran(web)
    web.page.reload()  # the same answer, now from the stored history
    expect(web.answers().last).to_contain_text("Here you go:")
    assert_nothing_ran(web)


def test_the_policy_itself_refuses_inline_code_and_html_strings(web: Browsing) -> None:
    """The Content-Security-Policy alone, with the page's own code out of the way."""
    tried = web.page.evaluate("""() => {
      const outcome = {};
      try {
        document.body.insertAdjacentHTML("beforeend", "<img src=/probe onerror='window.__ran=1'>");
        outcome.html = "inserted";
      } catch (e) { outcome.html = e.name; }
      const script = document.createElement("script");
      try { script.textContent = "window.__ran = 2"; outcome.script = "set"; }
      catch (e) { outcome.script = e.name; }
      document.body.append(script);
      return outcome;
    }""")
    assert tried == {"html": "TypeError", "script": "TypeError"}
    web.page.wait_for_function("window.__violations.length >= 2")
    assert web.page.evaluate("window.__ran") is None
    assert all("trusted-types" in v for v in web.violations())


class FrontEndPage(BaseHTTPRequestHandler):
    """Another origin's page, served from loopback as a user's own front end would be."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>front end</title>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def front_ends() -> Iterator[tuple[str, str]]:
    """Two origins on 127.0.0.1 other than chatms's: the one to allow, and another."""
    servers = [ThreadingHTTPServer(("127.0.0.1", free_port()), FrontEndPage) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tuple(f"http://127.0.0.1:{s.server_address[1]}" for s in servers)  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


def cross_origin_fetch(browser: Any, server: ServeProcess, origin: str) -> dict[str, Any]:
    """From a page of `origin`, list chats and stream one turn, as a front end would."""
    page = open_page(browser, origin).page
    page.goto(origin + "/")
    try:
        return dict(page.evaluate("""async ([api, token]) => {
          const headers = {Authorization: "Bearer " + token, "Content-Type": "application/json",
                           Accept: "text/event-stream"};
          try {
            const list = await fetch(api + "/chats?user_id=cors-user", {headers});
            const turn = await fetch(api + "/chat", {method: "POST", headers,
              body: JSON.stringify({user_id: "cors-user", user_message: "hi from afar"})});
            return {list: list.status, turn: turn.status, body: await turn.text()};
          } catch (e) { return {error: e.name}; }
        }""", [server.http_url, AUTH_TOKEN]))
    finally:
        page.context.close()


@pytest.fixture
def open_server(
    database_url: str, fake_openai: FakeOpenAI, tmp_path: Path, front_ends: tuple[str, str]
) -> Iterator[ServeProcess]:
    env = base_env(database_url, fake_openai.base_url, CORS_ALLOW_ORIGINS=front_ends[0])
    proc = ServeProcess(env, tmp_path / "serve.log").start()
    yield proc
    proc.kill()


def test_cors_is_closed_by_default(
    browser: Any, web_server: ServeProcess, front_ends: tuple[str, str]
) -> None:
    assert cross_origin_fetch(browser, web_server, front_ends[0]) == {"error": "TypeError"}


def test_a_listed_origin_may_call_the_api_and_others_may_not(
    browser: Any, open_server: ServeProcess, front_ends: tuple[str, str]
) -> None:
    allowed = cross_origin_fetch(browser, open_server, front_ends[0])
    assert (allowed.get("list"), allowed.get("turn")) == (200, 200), allowed
    assert "event: done" in allowed["body"] and "You said: hi from afar" in allowed["body"]
    other = cross_origin_fetch(browser, open_server, front_ends[1])
    assert other == {"error": "TypeError"}
