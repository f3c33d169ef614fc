// Building the page's pieces from data. Text goes in as text (textContent); only the
// sanitized fragment of renderMarkdown is ever inserted as markup.

import { renderMarkdown } from "./markdown.js";

export const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Why an answer is partial, in words; null for an answer that ended normally.
const COMPLETION_NOTES = {
  cancelled: "Stopped — the partial answer was kept.",
  stopped: "Stopped — the partial answer was kept.",
  upstream_error: "The model failed mid-answer — the partial answer was kept.",
  timeout: "Timed out — the partial answer was kept.",
  shutdown: "Cut off by a server restart — the partial answer was kept.",
  interrupted: "Cut off when the server stopped — the partial answer was kept.",
  too_long: "Cut at the longest answer this service keeps.",
};
const FINISH_NOTES = {
  length: "Cut short: the answer reached its token limit.",
  content_filter: "Cut short by the model's content filter.",
};

export function completionNote(completion, finishReason) {
  if (completion && completion !== "complete") {
    return COMPLETION_NOTES[completion] || `Ended early (${completion}).`;
  }
  return FINISH_NOTES[finishReason] || null;
}

// A stored question that got no answer at all (refused, stopped or failed before it began).
export function noAnswerNote(completion) {
  const why = {
    cancelled: "it was stopped before it began", stopped: "it was stopped before it began",
    timeout: "the model did not answer in time", shutdown: "the server was restarting",
    interrupted: "the server stopped",
  }[completion] || "the model could not answer";
  return `No answer: ${why}. This question is not sent to the model again.`;
}

// A message of the conversation; returns its element and a function to update the answer.
export function messageView({ role, content, erased = false }) {
  const article = el("article", `msg ${role === "user" ? "user" : "assistant"}`);
  if (erased) article.classList.add("erased");
  const who = el("h3", "visually-hidden", role === "user" ? "You said:" : "Answer:");
  const body = el("div", "body");
  const note = el("p", "note");
  note.hidden = true;
  article.append(who, body, note);
  if (erased) article.append(el("p", "note", "No longer in the model's context (oldest messages leave it first)."));
  const view = {
    article,
    setContent(text) {
      if (role === "user") body.textContent = text;
      else body.replaceChildren(renderMarkdown(text));
    },
    setNote(text, kind = "note") {
      note.textContent = text || "";
      note.className = kind;
      note.hidden = !text;
    },
    setPending(pending) {
      article.classList.toggle("pending", pending);
      article.setAttribute("aria-busy", pending ? "true" : "false");
    },
  };
  view.setContent(content);
  return view;
}

export function systemView(content) {
  const details = el("details", "system");
  details.append(el("summary", null, "System prompt"), el("p", null, content));
  return details;
}

function shortDate(iso) {
  const when = new Date(iso);
  const today = new Date();
  if (when.toDateString() === today.toDateString()) {
    return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  return when.toLocaleDateString([], { month: "short", day: "numeric" });
}

// One entry of the chat list: a button that opens the chat.
export function chatItem(chat, onOpen) {
  const li = el("li");
  li.dataset.chatId = chat.chat_id;
  const button = el("button", "chat-item");
  button.type = "button";
  const title = el("span", "chat-item-title", chat.title || "Untitled chat");
  const meta = el("span", "chat-item-meta", shortDate(chat.updated_at));
  if (chat.status === "ended") meta.append(el("span", "badge", "ended"));
  button.append(title, meta);
  button.addEventListener("click", () => onOpen(chat.chat_id));
  li.append(button);
  return li;
}

// What went wrong, in words for a person: never a raw body or a status code alone. One
// table, by the API's `error.code`; `said` is the server's own sentence, in brackets.
const ERROR_WORDS = {
  unauthenticated: () => "The access token was not accepted. Check it and sign in again.",
  chat_busy: () =>
    "This chat is still answering another message. Wait until it finishes, then send again.",
  chat_ended: () => "This chat has ended. Start a new chat to continue.",
  message_too_large: (said) => `Your message is too long${said}. Shorten it and send again.`,
  not_found: () => "That chat was not found. It may belong to another user.",
  not_configured: (said) => `The service is not set up to answer yet${said}.`,
  upstream_rate_limited: () =>
    "The model is busy right now (rate limited). Wait a little and try again.",
  upstream_timeout: () => "The model took too long to answer. Try again in a moment.",
  upstream_unavailable: (said) => `The model could not answer${said}. Try again in a moment.`,
  unavailable: (said) => `chatms is unavailable right now${said}. Try again in a moment.`,
  invalid_argument: (said) => `The message was refused${said}.`,
  incomplete: () => "The connection was lost before the answer was complete.",
};
ERROR_WORDS.payload_too_large = ERROR_WORDS.message_too_large;
ERROR_WORDS.upstream_rejected = ERROR_WORDS.upstream_unavailable;

export function describeError(err) {
  if (err instanceof TypeError) {
    return "chatms could not be reached. Check that it is running, then try again.";
  }
  const said = err.message ? ` (${err.message})` : "";
  const words = ERROR_WORDS[err.code];
  return words ? words(said) : `Something went wrong${said}.`;
}
