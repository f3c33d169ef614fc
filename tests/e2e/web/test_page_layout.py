"""Keyboard only, accessible names, phone-sized screens, light and dark; screenshots.

The screenshots go to tests/e2e/web/screenshots/ (ignored by git) on every run. The images
the README shows are refreshed only on request:

    CHATMS_DOCS_SCREENSHOTS=1 python -m pytest tests/e2e/web -k screenshots
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.web.conftest import PHONE, Browsing, open_page, screenshot
from tests.fakes.openai import FakeOpenAI, Script, WholeScript
from tests.support import AUTH_TOKEN, ROOT, ServeProcess

DEMO_QUESTION = "How do I list the files in a folder with Python, newest first?"
DEMO_ANSWER = [
    "Use `pathlib` and sort by modification time:\n\n",
    "```python\nfrom pathlib import Path\n\n",
    "files = sorted(Path(\".\").iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)\n",
    "for f in files:\n    print(f.name)\n```\n\n",
    "A few notes:\n\n",
    "- `iterdir()` lists files **and** folders; filter with `p.is_file()`.\n",
    "- `st_mtime` is the last modification, in seconds since the epoch.\n\n",
    "| method | includes subfolders |\n| --- | --- |\n| `iterdir()` | no |\n",
    "| `rglob(\"*\")` | yes |\n",
]


def test_keyboard_alone_signs_in_and_sends_and_every_control_has_its_name(
    web: Browsing, fake_openai: FakeOpenAI
) -> None:
    keys = web.page.keyboard
    expect(web.field("Access token")).to_be_focused()
    keys.type(AUTH_TOKEN)
    keys.press("Tab")
    expect(web.field("User")).to_be_focused()
    keys.type(web.user)
    keys.press("Enter")
    expect(web.field("Message")).to_be_focused()
    keys.type("line one")
    keys.press("Shift+Enter")
    keys.type("line two")
    expect(web.field("Message")).to_have_value("line one\nline two")  # Shift+Enter: a new line
    fake_openai.queue(Script(pieces=["one", " moment"], gap=0.5))
    keys.press("Enter")
    expect(web.page.locator("#messages .msg.user .body")).to_have_text("line one\nline two")
    expect(web.button("Stop")).to_be_focused()  # the one useful control while it answers
    web.wait_idle()
    expect(web.field("Message")).to_be_focused()
    keys.press("Tab")
    expect(web.button("Send")).to_be_focused()

    for name in ("Send", "New chat", "End chat", "Sign out"):
        expect(web.button(name)).to_have_count(1)
    assert web.page.get_by_role("button", name="Stop", exact=True,
                                include_hidden=True).count() == 1
    expect(web.page.get_by_role("log", name="Conversation")).to_be_visible()
    expect(web.page.get_by_role("navigation", name="Chats")).to_be_visible()


def test_phone_sized_screen_fits_and_the_chat_list_opens_on_demand(
    browser: Any, web_server: ServeProcess, fake_openai: FakeOpenAI
) -> None:
    web = open_page(browser, web_server.http_url, viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        web.goto()
        web.sign_in()
        fake_openai.queue(Script(pieces=DEMO_ANSWER))
        web.send(DEMO_QUESTION)
        web.wait_idle()
        expect(web.page.locator("#messages table")).to_be_visible()
        assert web.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        for name in ("Send", "End chat", "Chats"):
            box = web.button(name).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], name
        expect(web.page.get_by_role("navigation", name="Chats")).to_be_hidden()
        screenshot(web.page, "phone-light")
        web.button("Chats").click()
        expect(web.button("Chats")).to_have_attribute("aria-expanded", "true")
        expect(web.button("New chat")).to_be_visible()
        web.page.locator("#chat-list li").first.get_by_role("button").click()
        expect(web.page.get_by_role("navigation", name="Chats")).to_be_hidden()
    finally:
        web.page.context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_follow_the_system_color_scheme(
    browser: Any, web_server: ServeProcess, fake_openai: FakeOpenAI, scheme: str
) -> None:
    web = open_page(browser, web_server.http_url, color_scheme=scheme)
    web.user = "ada-" + web.user[-6:]  # a friendlier name for the README's picture
    try:
        web.goto()
        web.sign_in()
        for question, title in (("Plan a weekend in Lisbon", "A weekend in Lisbon"),
                                ("What is MVCC in PostgreSQL?", "MVCC in PostgreSQL")):
            fake_openai.queue_whole("title", WholeScript(text=title))
            web.send(question)
            web.wait_idle()
            web.button("New chat").click()
        fake_openai.queue(Script(pieces=DEMO_ANSWER))
        fake_openai.queue_whole("title", WholeScript(text="Python files, newest first"))
        web.send(DEMO_QUESTION)
        web.wait_idle()
        expect(web.page.locator("#chat-title")).to_have_text("Python files, newest first")
        expect(web.page.locator(".chat-item-title")).to_have_text(
            ["Python files, newest first", "MVCC in PostgreSQL", "A weekend in Lisbon"])
        web.page.locator("#message").blur()
        background = web.page.evaluate("getComputedStyle(document.body).backgroundColor")
        channels = [int(c) for c in background[background.index("(") + 1:-1].split(",")[:3]]
        assert (sum(channels) / 3 < 80) == (scheme == "dark"), background
        path = screenshot(web.page, f"desktop-{scheme}")
        if os.environ.get("CHATMS_DOCS_SCREENSHOTS") == "1":
            suffix = "" if scheme == "light" else "-dark"
            (ROOT / "docs").mkdir(exist_ok=True)
            shutil.copyfile(path, ROOT / "docs" / f"web-chat{suffix}.png")
    finally:
        web.page.context.close()
