// The chat page: sign-in, the chat list, one conversation, and sending with streamed answers.
// The token and user live in sessionStorage only: never in a URL, a cookie or a log.

import { Api, ApiError } from "./api.js";
import {
  $, chatItem, completionNote, describeError, messageView, systemView,
} from "./view.js";

const SESSION_KEY = "chatms.session";
const HINT = "Enter sends · Shift+Enter adds a line";

let api = null;
let current = { id: null, status: null };
let turn = null; // { controller } while an answer streams
const list = { cursor: null, loading: false, started: false };

// ---- session ------------------------------------------------------------------------

function savedSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return saved && saved.token && saved.user ? saved : null;
  } catch {
    return null;
  }
}

function showSignIn(message = "") {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  const user = $("user").value.trim();
  const error = $("signin-error");
  if (!token || !user) {
    error.textContent = "Enter both the access token and a user name.";
    return;
  }
  if (/[^\x20-\x7e]/.test(token)) {
    error.textContent = "That access token is not accepted: it has characters a token cannot have.";
    return;
  }
  $("signin-button").disabled = true;
  error.textContent = "";
  const candidate = new Api(token, user);
  try {
    const page = await candidate.listChats();
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token, user }));
    $("token").value = "";
    enter(candidate, page);
  } catch (err) {
    error.textContent = err.code === "unauthenticated"
      ? "That access token is not accepted. Check it and try again."
      : describeError(err);
  } finally {
    $("signin-button").disabled = false;
  }
}

function signOut(message = "") {
  stopAnswer();
  sessionStorage.removeItem(SESSION_KEY);
  api = null;
  $("token").value = "";
  $("user").value = "";
  $("chat-list").replaceChildren();
  history.replaceState(null, "", location.pathname);
  showSignIn(message);
}

// A 401 in the middle of things: the token changed on the server; back to sign-in.
function handleAuth(err) {
  if (err instanceof ApiError && err.code === "unauthenticated") {
    signOut("The access token is no longer accepted. Sign in again.");
    return true;
  }
  return false;
}

function enter(newApi, firstPage = null) {
  api = newApi;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").textContent = api.user;
  list.cursor = null;
  list.started = false;
  $("chat-list").replaceChildren();
  loadChats(firstPage);
  const wanted = chatIdFromHash();
  if (wanted) openChat(wanted);
  else newChat();
}

// ---- the chat list --------------------------------------------------------------------

async function loadChats(page = null) {
  if (list.loading || (list.started && !list.cursor)) return;
  list.loading = true;
  const status = $("list-status");
  status.textContent = "Loading chats…";
  try {
    page = page || await api.listChats(list.cursor);
    list.started = true;
    list.cursor = page.next_cursor || null;
    for (const chat of page.chats) {
      if (!findItem(chat.chat_id)) $("chat-list").append(chatItem(chat, openChat));
    }
    status.textContent = $("chat-list").children.length ? "" : "No chats yet.";
    markSelected();
  } catch (err) {
    if (!handleAuth(err)) status.textContent = describeError(err);
  } finally {
    list.loading = false;
  }
  if (list.cursor && sentinelVisible()) loadChats();
}

function sentinelVisible() {
  const box = $("chat-scroll").getBoundingClientRect();
  return $("list-status").getBoundingClientRect().top < box.bottom + 200;
}

function findItem(chatId) {
  return [...$("chat-list").children].find((li) => li.dataset.chatId === chatId) || null;
}

// Put a chat at the top of the list (it was just created or written to).
function bumpChat(chatId, title) {
  const old = findItem(chatId);
  const summary = {
    chat_id: chatId, status: current.status || "active", updated_at: new Date().toISOString(),
    title: old ? old.querySelector(".chat-item-title").textContent : title,
  };
  old?.remove();
  $("chat-list").prepend(chatItem(summary, openChat));
  $("list-status").textContent = "";
  markSelected();
}

function markSelected() {
  for (const li of $("chat-list").children) {
    const button = li.firstElementChild;
    if (li.dataset.chatId === current.id) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

// ---- one conversation -----------------------------------------------------------------

function chatIdFromHash() {
  const match = /^#chat=([0-9a-fA-F-]{36})$/.exec(location.hash);
  return match ? match[1] : null;
}

function setHash(chatId) {
  history.replaceState(null, "", chatId ? `#chat=${chatId}` : location.pathname);
}

function resetConversation(title) {
  $("messages").replaceChildren($("empty"));
  $("empty").hidden = false;
  $("chat-title").textContent = title;
  showError("");
  showSidebar(false);
}

function newChat() {
  stopAnswer();
  current = { id: null, status: null };
  setHash(null);
  resetConversation("New chat");
  markSelected();
  updateControls();
  $("message").focus();
}

async function openChat(chatId) {
  stopAnswer();
  current = { id: chatId, status: null };
  setHash(chatId);
  resetConversation(findItem(chatId)?.querySelector(".chat-item-title").textContent || "Chat");
  markSelected();
  updateControls();
  try {
    const chat = await api.getChat(chatId);
    if (current.id !== chatId) return; // another chat was opened meanwhile
    current.status = chat.status;
    showMessages(chat.messages);
  } catch (err) {
    if (!handleAuth(err) && current.id === chatId) showError(describeError(err));
  }
  updateControls();
}

function showMessages(messages) {
  $("empty").hidden = messages.some((m) => m.role !== "system");
  const firstQuestion = messages.find((m) => m.role === "user");
  if (firstQuestion) $("chat-title").textContent = firstQuestion.content.slice(0, 120);
  for (const m of messages) {
    if (m.role === "system") {
      $("messages").append(systemView(m.content));
      continue;
    }
    const view = messageView(m);
    if (m.role === "assistant") view.setNote(completionNote(m.completion, m.finish_reason));
    $("messages").append(view.article);
  }
  scrollToEnd();
}

function scrollToEnd() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

function showError(text) {
  $("chat-error").textContent = text;
}

function updateControls() {
  const busy = turn !== null;
  const ended = current.status === "ended";
  $("message").disabled = busy || ended;
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("end-chat").disabled = busy || ended || !current.id;
  $("composer-note").textContent = ended
    ? "This chat has ended. Start a new chat to continue."
    : busy ? "Answering… Stop (or Escape) ends the answer here." : HINT;
}

function showSidebar(show) {
  $("app").classList.toggle("show-chats", show);
  $("toggle-chats").setAttribute("aria-expanded", String(show));
}

// ---- sending --------------------------------------------------------------------------

// Stop the answer being streamed. Today an answer ends when its client goes away, so
// aborting the request is enough; once answers outlive their connection, this is the one
// place to call POST /chats/{id}/stop instead.
function stopAnswer() {
  turn?.controller.abort();
}

async function send(event) {
  event?.preventDefault();
  const input = $("message");
  const text = input.value;
  if (turn || !text.trim() || current.status === "ended") return;
  const mine = { controller: new AbortController() };
  turn = mine;
  const chatAtStart = current.id;
  input.value = "";
  showError("");
  updateControls();
  $("stop").focus();
  $("empty").hidden = true;
  const question = messageView({ role: "user", content: text });
  const answer = messageView({ role: "assistant", content: "" });
  answer.setPending(true);
  $("messages").append(question.article, answer.article);
  scrollToEnd();

  let content = "";
  let painting = false;
  const paint = () => {
    painting = false;
    answer.setContent(content);
    scrollToEnd();
  };
  try {
    const done = await api.streamTurn({
      chatId: chatAtStart, text, signal: mine.controller.signal,
      onChatId: (id) => adoptChat(id, text, mine),
      onDelta: (delta) => {
        content += delta;
        if (!painting) {
          painting = true;
          requestAnimationFrame(paint);
        }
      },
    });
    content = done.content;
    paint();
    answer.setNote(completionNote(null, done.finish_reason));
  } catch (err) {
    paint();
    if (err.name === "AbortError") {
      answer.setNote(content ? completionNote("cancelled") : "Stopped before any answer.");
    } else if (!handleAuth(err)) {
      if (!content) answer.article.remove();
      if (!content && !input.value) input.value = text; // ready to send again
      if (current.id === chatAtStart || turn === mine) showError(describeError(err));
    }
  } finally {
    answer.setPending(false);
    if (turn === mine) {
      turn = null;
      updateControls();
      if (api) input.focus();
    }
  }
}

// The turn named its chat: a new chat joins the list and the address; an old one moves up.
function adoptChat(chatId, text, mine) {
  if (turn !== mine) return;
  if (current.id !== chatId) {
    current = { id: chatId, status: "active" };
    setHash(chatId);
    $("chat-title").textContent = text.slice(0, 120);
  }
  bumpChat(chatId, text.slice(0, 200));
  updateControls();
}

function confirmEnd() {
  if (current.id && !turn) $("confirm-end").showModal();
}

async function endChat() {
  $("confirm-end").close();
  const chatId = current.id;
  try {
    await api.endChat(chatId);
    if (current.id === chatId) current.status = "ended";
    bumpEnded(chatId);
  } catch (err) {
    if (!handleAuth(err)) showError(describeError(err));
  }
  updateControls();
}

function bumpEnded(chatId) {
  const item = findItem(chatId);
  if (!item) return;
  const meta = item.querySelector(".chat-item-meta");
  if (!meta.querySelector(".badge")) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "ended";
    meta.append(badge);
  }
}

// ---- wiring ---------------------------------------------------------------------------

function onMessageKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
}

function wire() {
  $("signin-form").addEventListener("submit", signIn);
  $("composer").addEventListener("submit", send);
  $("message").addEventListener("keydown", onMessageKey);
  $("stop").addEventListener("click", stopAnswer);
  $("new-chat").addEventListener("click", newChat);
  $("sign-out").addEventListener("click", () => signOut());
  $("end-chat").addEventListener("click", confirmEnd);
  $("confirm-end-yes").addEventListener("click", endChat);
  $("confirm-end-cancel").addEventListener("click", () => $("confirm-end").close());
  $("toggle-chats").addEventListener("click", () =>
    showSidebar(!$("app").classList.contains("show-chats")));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && turn) stopAnswer();
  });
  window.addEventListener("hashchange", () => {
    const wanted = chatIdFromHash();
    if (api && wanted && wanted !== current.id) openChat(wanted);
  });
  new IntersectionObserver((entries) => {
    if (api && entries.some((e) => e.isIntersecting)) loadChats();
  }, { root: $("chat-scroll"), rootMargin: "200px" }).observe($("list-status"));
}

wire();
const saved = savedSession();
if (saved) enter(new Api(saved.token, saved.user));
else showSignIn();
