// One conversation: opening a chat, sending with a streamed answer, stopping, ending.

import {
  $, completionNote, describeError, messageView, noAnswerNote, systemView,
} from "./view.js";
import { bumpChat, bumpEnded, findItem, markSelected, retitle } from "./chatlist.js";
import { leaveAnswer, named, painter, positionOf, stopAnswer } from "./live.js";
import { handleAuth, state } from "./state.js";

export { stopAnswer };

const HINT = "Enter sends · Shift+Enter adds a line";
const TITLE_AFTER_MS = 3000; // chatms asks the model for a title once the first answer is in

export function chatIdFromHash() {
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
  $("chat-model").textContent = "";
  showError("");
  showSidebar(false);
}

export function newChat() {
  leaveAnswer();
  state.current = { id: null, status: null };
  setHash(null);
  resetConversation("New chat");
  markSelected();
  updateControls();
  $("message").focus();
}

export async function openChat(chatId) {
  leaveAnswer();
  state.current = { id: chatId, status: null };
  setHash(chatId);
  resetConversation(findItem(chatId)?.querySelector(".chat-item-title").textContent || "Chat");
  markSelected();
  updateControls();
  try {
    const chat = await state.api.getChat(chatId);
    if (state.current.id !== chatId) return; // another chat was opened meanwhile
    state.current.status = chat.status;
    showHeading(chat);
    const last = showMessages(chat);
    const writing = chat.messages.at(-1);
    if (writing?.role === "assistant" && writing.completion === "streaming") {
      await followAnswer(chatId, last, writing.content);
    }
  } catch (err) {
    if (!handleAuth(err) && state.current.id === chatId) showError(describeError(err));
  }
  updateControls();
}

function showHeading(chat) {
  const firstQuestion = chat.messages.find((m) => m.role === "user");
  const title = chat.title || firstQuestion?.content.slice(0, 120);
  if (title) $("chat-title").textContent = title;
  $("chat-model").textContent = chat.model || "";
  retitle(chat.chat_id, chat.title);
}

// A new chat gets its title a moment after its first answer: show it once it is there.
async function refreshTitle(chatId) {
  try {
    const chat = await state.api.getChat(chatId);
    retitle(chatId, chat.title);
    if (state.current.id === chatId && !state.turn) showHeading(chat);
  } catch {
    // only cosmetic: the title shows on the next load of the list
  }
}

// The chat's answer is still being written (the page was reloaded, or the chat reopened):
// pick it up from what is shown, live, with Stop offered as while sending.
async function followAnswer(chatId, view, shown) {
  const mine = { controller: new AbortController(), chatId };
  state.turn = mine;
  updateControls();
  view.setPending(true);
  view.setNote(null);
  const painted = painter(view, shown, scrollToEnd);
  try {
    const done = await state.api.resumeAnswer({
      chatId, after: positionOf(shown), signal: mine.controller.signal, onDelta: painted.onDelta,
    });
    painted.paint();
    view.setNote(completionNote(done.completion, done.finish_reason));
  } catch (err) {
    if (err.name !== "AbortError") throw err;
  } finally {
    view.setPending(false);
    if (state.turn === mine) {
      state.turn = null;
      updateControls();
    }
  }
}

// Shows the messages; returns the view of the last one.
function showMessages(chat) {
  const messages = chat.messages;
  $("empty").hidden = messages.length > 0;
  // The system message is the chat's own, shown first; it is not one of its messages.
  if (chat.system_message) $("messages").append(systemView(chat.system_message.content));
  let last = null;
  for (const m of messages) {
    const view = messageView(m);
    if (m.role === "assistant") {
      view.setNote(m.content ? completionNote(m.completion, m.finish_reason)
        : noAnswerNote(m.completion));
    }
    $("messages").append(view.article);
    last = view;
  }
  scrollToEnd();
  return last;
}

function scrollToEnd() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

function showError(text) {
  $("chat-error").textContent = text;
}

export function updateControls() {
  const busy = state.turn !== null;
  const ended = state.current.status === "ended";
  $("message").disabled = busy || ended;
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("end-chat").disabled = busy || ended || !state.current.id;
  $("composer-note").textContent = ended
    ? "This chat has ended. Start a new chat to continue."
    : busy ? "Answering… Stop (or Escape) ends the answer here." : HINT;
}

export function showSidebar(show) {
  $("app").classList.toggle("show-chats", show);
  $("toggle-chats").setAttribute("aria-expanded", String(show));
}

// ---- sending --------------------------------------------------------------------------

export async function send(event) {
  event?.preventDefault();
  const input = $("message");
  const text = input.value;
  if (state.turn || !text.trim() || state.current.status === "ended") return;
  const chatAtStart = state.current.id;
  const mine = { controller: new AbortController(), chatId: chatAtStart };
  state.turn = mine;
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

  const painted = painter(answer, "", scrollToEnd);
  try {
    const done = await state.api.streamTurn({
      chatId: chatAtStart, text, signal: mine.controller.signal,
      onChatId: (id) => adoptChat(id, text, mine), onDelta: painted.onDelta,
    });
    painted.text = done.content;
    painted.paint();
    answer.setNote(completionNote(done.completion, done.finish_reason));
    if (!chatAtStart) setTimeout(() => state.api && refreshTitle(done.chat_id), TITLE_AFTER_MS);
  } catch (err) {
    painted.paint();
    const content = painted.text;
    if (err.name === "AbortError") {
      answer.setNote(content ? completionNote("cancelled") : "Stopped before any answer.");
    } else if (!handleAuth(err)) {
      if (content) {
        answer.setNote(partialNote(err));
      } else { // nothing came back: the question returns to the box, ready to send again
        question.article.remove();
        answer.article.remove();
        $("empty").hidden = $("messages").querySelector(".msg") !== null;
        if (!input.value) input.value = text;
      }
      if (state.current.id === chatAtStart || state.turn === mine) showError(describeError(err));
    }
  } finally {
    answer.setPending(false);
    if (state.turn === mine) {
      state.turn = null;
      updateControls();
      if (state.api) input.focus();
    }
  }
}

// Why an answer that failed midway is partial, as its stored completion will say.
function partialNote(err) {
  if (err.code === "upstream_timeout") return completionNote("timeout");
  if (String(err.code).startsWith("upstream_")) return completionNote("upstream_error");
  return "The answer was cut off; what arrived is shown.";
}

// The turn named its chat: a new chat joins the list and the address; an old one moves up.
function adoptChat(chatId, text, mine) {
  if (state.turn !== mine) return;
  named(mine, chatId);
  if (state.current.id !== chatId) {
    state.current = { id: chatId, status: "active" };
    setHash(chatId);
    $("chat-title").textContent = text.slice(0, 120);
  }
  bumpChat(chatId, text.slice(0, 200));
  updateControls();
}

export function confirmEnd() {
  if (state.current.id && !state.turn) $("confirm-end").showModal();
}

export async function endChat() {
  $("confirm-end").close();
  const chatId = state.current.id;
  try {
    await state.api.endChat(chatId);
    if (state.current.id === chatId) state.current.status = "ended";
    bumpEnded(chatId);
  } catch (err) {
    if (!handleAuth(err)) showError(describeError(err));
  }
  updateControls();
}

