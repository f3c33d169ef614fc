"""A real Chromium (Debian's, through Playwright) against a real `chatms serve`.

Where no browser or no Playwright is found the browser tests skip, saying why; with CI=true
(set by `.ci/run`, which installs Chromium) a missing browser fails them instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.support import AUTH_TOKEN, ROOT, ServeProcess, base_env, new_user

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
SCREENSHOTS = ROOT / "tests" / "e2e" / "web" / "screenshots"  # ignored by git
DESKTOP = {"width": 1200, "height": 760}
PHONE = {"width": 390, "height": 844}

# Every page records what the Content-Security-Policy refused, before any script of its own.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(e.violatedDirective + " " + e.blockedURI));
"""


def find_chromium() -> str | None:
    candidates = [os.environ.get("CHROMIUM_PATH"), "/usr/bin/chromium",
                  shutil.which("chromium"), shutil.which("chromium-browser")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}: .ci/run should have installed it")
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[test]')")
    path = find_chromium()
    if path is None:
        _unavailable("no Chromium found (/usr/bin/chromium, chromium on PATH, or CHROMIUM_PATH)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="package")
def web_server(
    database_url: str, fake_openai_server: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """One `chatms serve` for the browser tests; each test signs in as a user of its own."""
    env = base_env(database_url, fake_openai_server.base_url, MAX_MESSAGE_CHARS="2000",
                   MAX_ANSWER_CHARS="3000")
    proc = ServeProcess(env, tmp_path_factory.mktemp("web") / "serve.log").start()
    yield proc
    proc.kill()


@dataclass
class Browsing:
    """A page of a fresh browser context, and everything it asked the network for."""

    page: Any
    base_url: str
    user: str = field(default_factory=new_user)
    requests: list[str] = field(default_factory=list)

    def goto(self) -> None:
        self.page.goto(self.base_url + "/")

    def field(self, label: str) -> Any:
        return self.page.get_by_label(label, exact=True)

    def button(self, name: str) -> Any:
        return self.page.get_by_role("button", name=name, exact=True)

    def sign_in(self, token: str = AUTH_TOKEN, user: str | None = None) -> None:
        self.field("Access token").fill(token)
        self.field("User").fill(user or self.user)
        self.button("Sign in").click()

    def answers(self) -> Any:
        return self.page.locator("#messages .msg.assistant .body")

    def send(self, text: str) -> None:
        self.field("Message").fill(text)
        self.field("Message").press("Enter")

    def wait_idle(self, timeout: float = 20) -> None:
        """Until no answer streams (Send is back)."""
        self.button("Send").wait_for(state="visible", timeout=timeout * 1000)

    def violations(self) -> list[str]:
        return list(self.page.evaluate("window.__violations"))

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(self.base_url + "/")]


def open_page(browser: Any, base_url: str, **context: Any) -> Browsing:
    ctx = browser.new_context(**{"viewport": DESKTOP, "color_scheme": "light", **context})
    ctx.add_init_script(RECORD_VIOLATIONS)
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    browsing = Browsing(page, base_url)
    page.on("request", lambda request: browsing.requests.append(request.url))
    return browsing


@pytest.fixture
def web(browser: Any, web_server: ServeProcess, fake_openai: FakeOpenAI) -> Iterator[Browsing]:
    """A fresh context (empty sessionStorage) on the page, for a new user."""
    browsing = open_page(browser, web_server.http_url)
    browsing.goto()
    yield browsing
    browsing.page.context.close()


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
