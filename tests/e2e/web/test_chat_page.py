"""The web chat page in a real Chromium: sign-in, streaming, history, stop, end, errors."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.e2e.web.conftest import Browsing, screenshot
from tests.fakes.openai import FakeOpenAI, Script, WholeScript
from tests.support import AUTH_TOKEN, ServeProcess

HEADERS = {"authorization": AUTH_TOKEN}


def chat_id_of(web: Browsing) -> str:
    fragment = web.page.evaluate("location.hash")
    assert fragment.startswith("#chat="), fragment
    return str(fragment.removeprefix("#chat="))


def stored_chat(server: ServeProcess, user: str, chat_id: str) -> dict[str, Any]:
    reply = httpx.get(f"{server.http_url}/chats/{chat_id}", params={"user_id": user},
                      headers=HEADERS, timeout=10)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def watch_answer(web: Browsing, limit: float = 20) -> list[tuple[float, str]]:
    """Every different text the streaming answer shows, with when, until Send is back."""
    seen: list[tuple[float, str]] = []
    start = time.monotonic()
    while time.monotonic() - start < limit:
        text = (web.answers().last.text_content() or "").strip()
        if text and (not seen or seen[-1][1] != text):
            seen.append((time.monotonic() - start, text))
            if len(seen) == 2:  # mid-answer: the input is locked and Stop is offered
                assert web.field("Message").is_disabled()
                assert web.button("Stop").is_visible() and web.button("Send").is_hidden()
        if web.button("Send").is_visible():
            final = (web.answers().last.text_content() or "").strip()
            if not seen or seen[-1][1] != final:
                seen.append((time.monotonic() - start, final))
            return seen
        time.sleep(0.05)
    raise AssertionError(f"the answer did not finish within {limit}s; saw {seen}")


def test_answer_grows_over_several_moments_then_the_chat_survives_a_reload(
    web: Browsing, fake_openai: FakeOpenAI, web_server: ServeProcess
) -> None:
    pieces = ["Streaming", " answers", " arrive", " piece", " by", " piece", " over", " several",
              " moments", "."]
    fake_openai.queue(Script(pieces=pieces, gap=0.3))
    fake_openai.queue_whole("title", WholeScript(text="Slow streaming demo"))
    web.sign_in()
    web.send("Tell me slowly")
    seen = watch_answer(web)
    # The title chatms asks for after the first answer replaces the question, in place.
    expect(web.page.locator("#chat-title")).to_have_text("Slow streaming demo")
    expect(web.page.locator(".chat-item-title")).to_have_text(["Slow streaming demo"])
    texts = [text for _, text in seen]
    assert texts[-1] == "".join(pieces)
    assert len(texts) >= 4, f"the answer appeared in too few steps: {texts}"
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))
    assert seen[-1][0] - seen[0][0] >= 1.5, f"the answer did not stream: {seen}"
    chat_id = chat_id_of(web)

    web.page.reload()
    expect(web.field("Message")).to_be_visible()  # still signed in: the session survived
    item = web.page.locator("#chat-list li", has_text="Slow streaming demo")
    expect(item).to_have_count(1)
    web.button("New chat").click()
    expect(web.answers()).to_have_count(0)
    item.get_by_role("button").click()
    expect(web.answers().first).to_have_text("".join(pieces))
    assert chat_id_of(web) == chat_id
    expect(web.page.locator("#chat-title")).to_have_text("Slow streaming demo")
    expect(web.page.locator("#chat-model")).to_have_text(
        stored_chat(web_server, web.user, chat_id)["model"])

    web.send("And now continue")
    web.wait_idle()
    expect(web.answers().last).to_have_text("You said: And now continue")
    sent = [m["content"] for m in fake_openai.requests[-1].body["messages"]]
    assert sent[1:] == ["Tell me slowly", "".join(pieces), "And now continue"]
    assert chat_id_of(web) == chat_id

    # The token lives in sessionStorage only: no cookie, no localStorage, never in a URL.
    assert web.page.context.cookies() == []
    assert web.page.evaluate("localStorage.length") == 0
    assert AUTH_TOKEN in web.page.evaluate("sessionStorage.getItem('chatms.session')")
    assert not [url for url in web.requests if AUTH_TOKEN in url]
    assert web.foreign_requests() == []
    assert web.violations() == []


def test_stop_ends_the_answer_midway_and_the_partial_is_kept(
    web: Browsing, fake_openai: FakeOpenAI, web_server: ServeProcess
) -> None:
    fake_openai.queue(Script(pieces=[f" w{i}" for i in range(40)], gap=0.25))
    web.sign_in()
    web.send("Count slowly")
    expect(web.answers().last).to_contain_text("w3")
    web.button("Stop").click()
    web.wait_idle()
    shown = (web.answers().last.text_content() or "").strip()
    assert shown.startswith("w0 w1 w2 w3") and "w39" not in shown
    expect(web.page.locator(".msg.assistant .note").last).to_have_text(
        "Stopped — the partial answer was kept.")
    expect(web.field("Message")).to_be_enabled()
    screenshot(web.page, "stopped")

    deadline = time.monotonic() + 10
    while fake_openai.requests[-1].closed_early_at is None:
        assert time.monotonic() < deadline, "the upstream request was not closed after Stop"
        time.sleep(0.05)
    chat_id = chat_id_of(web)
    while True:  # the partial answer is final once the turn wound down
        messages = stored_chat(web_server, web.user, chat_id)["messages"]
        if messages and messages[-1]["completion"] != "streaming":
            break
        assert time.monotonic() < deadline, f"the partial answer was not stored: {messages}"
        time.sleep(0.1)
    # Stop goes through the stop route (so it works for a resumed answer, on any replica).
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[-1]["completion"] == "stopped"
    assert messages[-1]["content"].strip() == shown

    web.page.reload()
    stored = web.answers().last
    expect(stored).to_contain_text(shown)
    assert "w39" not in (stored.text_content() or "")
    expect(web.page.locator(".msg.assistant .note").last).to_have_text(
        "Stopped — the partial answer was kept.")


def test_a_reload_mid_answer_picks_the_answer_up_and_stop_still_works(
    web: Browsing, fake_openai: FakeOpenAI, web_server: ServeProcess
) -> None:
    """The answer outlives the page: after a reload it streams on where it was, whole."""
    pieces = [f" r{i}" for i in range(30)]
    fake_openai.queue(Script(pieces=pieces, gap=0.15),
                      Script(pieces=[f" s{i}" for i in range(60)], gap=0.2))
    web.sign_in()
    web.send("Go on while I reload")
    expect(web.answers().last).to_contain_text("r3")
    web.page.reload()
    expect(web.button("Stop")).to_be_visible()  # it is still being written
    web.wait_idle()
    expect(web.answers().last).to_have_text("".join(pieces).strip())
    assert web.page.locator(".msg.assistant .note").last.is_hidden()
    chat_id = chat_id_of(web)
    assert stored_chat(web_server, web.user, chat_id)["messages"][-1]["completion"] == "complete"
    # Reload during the next answer, then Stop the resumed one.
    web.send("And again")
    expect(web.answers().last).to_contain_text("s2")
    web.page.reload()
    expect(web.answers().last).to_contain_text("s5")
    web.button("Stop").click()
    web.wait_idle()
    expect(web.page.locator(".msg.assistant .note").last).to_have_text(
        "Stopped — the partial answer was kept.")
    shown = (web.answers().last.text_content() or "").strip()
    deadline = time.monotonic() + 10
    while (last := stored_chat(web_server, web.user, chat_id)["messages"][-1])[
            "completion"] == "streaming":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert last["completion"] == "stopped" and last["content"].strip() == shown
    assert "s59" not in shown
    assert web.violations() == []


def test_end_chat_asks_first_then_ends_it(
    web: Browsing, fake_openai: FakeOpenAI, web_server: ServeProcess
) -> None:
    web.sign_in()
    web.send("hello there")
    web.wait_idle()
    chat_id = chat_id_of(web)

    web.button("End chat").click()
    dialog = web.page.get_by_role("dialog", name="End this chat?")
    expect(dialog).to_be_visible()
    web.button("Cancel").click()
    expect(dialog).to_be_hidden()
    assert stored_chat(web_server, web.user, chat_id)["status"] == "active"

    web.button("End chat").click()
    web.button("Yes, end it").click()
    expect(web.field("Message")).to_be_disabled()
    expect(web.button("End chat")).to_be_disabled()
    expect(web.page.locator("#composer-note")).to_contain_text("This chat has ended")
    expect(web.page.locator("#chat-list li", has_text="hello there")).to_contain_text("ended")
    assert stored_chat(web_server, web.user, chat_id)["status"] == "ended"

    web.page.reload()  # the ended state comes from the server, not from the page's memory
    expect(web.field("Message")).to_be_disabled()


def test_a_wrong_token_is_said_plainly_and_sign_out_forgets(web: Browsing) -> None:
    web.sign_in(token="not-the-token")
    expect(web.page.get_by_role("alert")).to_have_text(
        "That access token is not accepted. Check it and try again.")
    expect(web.button("Sign in")).to_be_visible()
    assert web.page.evaluate("sessionStorage.length") == 0

    web.sign_in()
    expect(web.field("Message")).to_be_visible()
    assert web.page.evaluate("sessionStorage.length") == 1
    web.button("Sign out").click()
    expect(web.button("Sign in")).to_be_visible()
    assert web.page.evaluate("sessionStorage.length") == 0
    expect(web.field("Access token")).to_have_value("")
    web.page.reload()
    expect(web.button("Sign in")).to_be_visible()


def test_errors_appear_inline_in_words(
    web: Browsing, fake_openai: FakeOpenAI, web_server: ServeProcess
) -> None:
    alert = web.page.locator("#chat-error")
    web.sign_in()
    web.send("x" * 2001)  # the server under test allows 2000 characters
    expect(alert).to_contain_text("Your message is too long")
    expect(web.field("Message")).to_have_value("x" * 2001)  # kept, ready to shorten
    expect(web.page.locator("#messages .msg")).to_have_count(0)  # it went back to the box

    fake_openai.queue(Script(status=503))
    web.send("is anyone there?")
    expect(alert).to_contain_text("The model could not answer")

    web.send("first")
    web.wait_idle()
    expect(alert).to_be_hidden()
    chat_id = chat_id_of(web)
    fake_openai.queue(Script(pieces=[" slow"] * 6, gap=0.5))
    started = len(fake_openai.requests)
    other = threading.Thread(target=httpx.post, args=(f"{web_server.http_url}/chat",), kwargs={
        "json": {"user_id": web.user, "chat_id": chat_id, "user_message": "meanwhile"},
        "headers": HEADERS, "timeout": 30})
    other.start()
    deadline = time.monotonic() + 10
    while len(fake_openai.requests) == started:  # the other turn holds the chat now
        assert time.monotonic() < deadline, "the other turn never reached the upstream"
        time.sleep(0.05)
    web.send("second")
    expect(alert).to_have_text("This chat is still answering another message. "
                               "Wait until it finishes, then send again.")
    screenshot(web.page, "busy-error")
    other.join(30)
    for text in alert.all_text_contents():
        assert "{" not in text and "error" not in text.lower()


def test_answers_cut_short_say_why_live_and_in_the_history(
    web: Browsing, fake_openai: FakeOpenAI
) -> None:
    notes = web.page.locator("#messages .msg.assistant .note")
    web.sign_in()
    fake_openai.queue(Script(pieces=["Half", " an", " answer"], finish_reason="length"))
    web.send("Say a lot")
    web.wait_idle()
    expect(notes.last).to_have_text("Cut short: the answer reached its token limit.")
    fake_openai.queue(Script(pieces=["Partly", " there", " and", " then"], cut_after=2))
    web.send("Go on")
    web.wait_idle()
    expect(web.answers().last).to_have_text("Partly there")
    expect(notes.last).to_have_text("The model failed mid-answer — the partial answer was kept.")
    expect(web.page.locator("#chat-error")).to_contain_text("The model could not answer")
    screenshot(web.page, "cut-short")
    fake_openai.queue(Script(status=503))
    web.send("Anyone?")
    expect(web.field("Message")).to_have_value("Anyone?")  # no answer: back in the box
    fake_openai.queue(Script(pieces=["y" * 2000, "z" * 2000]))  # the server keeps 3000
    web.send("Anyone?")
    web.wait_idle()
    expect(notes.last).to_have_text("Cut at the longest answer this service keeps.")

    web.page.reload()
    expect(web.answers()).to_have_count(4)
    expect(notes).to_have_text([
        "Cut short: the answer reached its token limit.",
        "The model failed mid-answer — the partial answer was kept.",
        "No answer: the model could not answer. This question is not sent to the model again.",
        "Cut at the longest answer this service keeps.",
    ])
    assert len((web.answers().last.text_content() or "").strip()) == 3000


def test_the_chat_list_pages_in_as_it_is_scrolled(
    web: Browsing, fake_openai: FakeOpenAI, web_server: ServeProcess
) -> None:
    with httpx.Client(base_url=web_server.http_url, headers=HEADERS, timeout=30) as client:
        for n in range(25):
            reply = client.post("/chat", json={"user_id": web.user, "user_message": f"chat {n}"})
            assert reply.status_code == 200, reply.text
    web.sign_in()
    items = web.page.locator("#chat-list li")
    expect(items).to_have_count(20)  # one page, newest first
    expect(items.first).to_contain_text("chat 24")
    expect(web.page.locator("#list-status")).to_have_text("")
    assert not [url for url in web.requests if "cursor=" in url]  # nothing more until scrolled
    web.page.locator("#chat-scroll").evaluate("box => { box.scrollTop = box.scrollHeight; }")
    expect(items).to_have_count(25)
    expect(items.last).to_contain_text("chat 0")
