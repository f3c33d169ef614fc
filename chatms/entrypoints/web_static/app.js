// The chat page's entry point: sign-in and sign-out, and wiring the controls.
// The token and user live in sessionStorage only: never in a URL, a cookie or a log.

import { Api } from "./api.js";
import { loadChats, resetChatList, sentinelWatcher } from "./chatlist.js";
import { leaveAnswer } from "./live.js";
import {
  chatIdFromHash, confirmEnd, endChat, newChat, openChat, send, showSidebar, stopAnswer,
} from "./conversation.js";
import { state } from "./state.js";
import { $, describeError } from "./view.js";

const SESSION_KEY = "chatms.session";

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
  leaveAnswer();
  sessionStorage.removeItem(SESSION_KEY);
  state.api = null;
  $("token").value = "";
  $("user").value = "";
  resetChatList(openChat);
  history.replaceState(null, "", location.pathname);
  showSignIn(message);
}

function enter(api, firstPage = null) {
  state.api = api;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").textContent = api.user;
  resetChatList(openChat);
  loadChats(firstPage);
  const wanted = chatIdFromHash();
  if (wanted) openChat(wanted);
  else newChat();
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
    if (event.key === "Escape" && state.turn) stopAnswer();
  });
  window.addEventListener("hashchange", () => {
    const wanted = chatIdFromHash();
    if (state.api && wanted && wanted !== state.current.id) openChat(wanted);
  });
  sentinelWatcher().observe($("list-status"));
}

state.signOut = signOut;
wire();
const saved = savedSession();
if (saved) enter(new Api(saved.token, saved.user));
else showSignIn();
