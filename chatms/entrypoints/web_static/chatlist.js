// The list of the user's chats: newest first, a page at a time as it is scrolled.

import { $, chatItem, describeError } from "./view.js";
import { handleAuth, state } from "./state.js";

// `generation` changes on every reset, so a page still loading for a user who signed out
// is dropped rather than shown to the next one.
const list = { cursor: null, loading: false, started: false, generation: 0, onOpen: null };

export function resetChatList(onOpen) {
  Object.assign(list, { cursor: null, loading: false, started: false, onOpen });
  list.generation += 1;
  $("chat-list").replaceChildren();
  $("list-status").textContent = "";
}

export async function loadChats(page = null) {
  if (list.loading || (list.started && !list.cursor) || !state.api) return;
  const generation = list.generation;
  list.loading = true;
  const status = $("list-status");
  status.textContent = "Loading chats…";
  try {
    page = page || await state.api.listChats(list.cursor);
    if (generation !== list.generation) return;
    list.started = true;
    list.cursor = page.next_cursor || null;
    for (const chat of page.chats) {
      if (!findItem(chat.chat_id)) $("chat-list").append(chatItem(chat, list.onOpen));
    }
    status.textContent = $("chat-list").children.length ? "" : "No chats yet.";
    markSelected();
  } catch (err) {
    if (!handleAuth(err)) status.textContent = describeError(err);
  } finally {
    if (generation === list.generation) list.loading = false;
  }
  if (generation === list.generation && list.cursor && sentinelVisible()) loadChats();
}

function sentinelVisible() {
  const box = $("chat-scroll").getBoundingClientRect();
  return $("list-status").getBoundingClientRect().top < box.bottom + 200;
}

export function findItem(chatId) {
  return [...$("chat-list").children].find((li) => li.dataset.chatId === chatId) || null;
}

// Put a chat at the top of the list (it was just created or written to).
export function bumpChat(chatId, title) {
  const old = findItem(chatId);
  const summary = {
    chat_id: chatId, status: state.current.status || "active", updated_at: new Date().toISOString(),
    title: old ? old.querySelector(".chat-item-title").textContent : title,
  };
  old?.remove();
  $("chat-list").prepend(chatItem(summary, list.onOpen));
  $("list-status").textContent = "";
  markSelected();
}

// The chat's title changed (chatms writes one after the first exchange).
export function retitle(chatId, title) {
  const shown = findItem(chatId)?.querySelector(".chat-item-title");
  if (shown && title) shown.textContent = title;
}

export function markSelected() {
  for (const li of $("chat-list").children) {
    const button = li.firstElementChild;
    if (li.dataset.chatId === state.current.id) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

// Show the chat as ended in the list, where it is.
export function bumpEnded(chatId) {
  const item = findItem(chatId);
  if (!item) return;
  const title = item.querySelector(".chat-item-title").textContent;
  const summary = { chat_id: chatId, status: "ended", title, updated_at: new Date().toISOString() };
  item.replaceWith(chatItem(summary, list.onOpen));
  markSelected();
}

export function sentinelWatcher() {
  return new IntersectionObserver((entries) => {
    if (state.api && entries.some((e) => e.isIntersecting)) loadChats();
  }, { root: $("chat-scroll"), rootMargin: "200px" });
}
