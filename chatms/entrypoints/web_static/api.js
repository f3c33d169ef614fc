// The page's client of chatms's public HTTP API; nothing here touches the DOM.

export const PAGE_SIZE = 20;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The error object of a JSON error body, or a generic one when the body is something else.
async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const err = body && typeof body === "object" ? body.error : null;
  if (err && typeof err.code === "string" && typeof err.message === "string") {
    return new ApiError(response.status, err.code, err.message);
  }
  return new ApiError(response.status, "http_error", `the server answered HTTP ${response.status}`);
}

// Server-Sent Events from a fetch body: yields {event, data} with data parsed as JSON.
async function* serverEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

export class Api {
  constructor(token, user) {
    this.token = token;
    this.user = user;
  }

  async request(method, path, { query = {}, body, signal, accept = "application/json" } = {}) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(query)) {
      if (value !== null && value !== undefined) url.searchParams.set(name, value);
    }
    const headers = { Authorization: `Bearer ${this.token}`, Accept: accept };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method, headers, signal, cache: "no-store", credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  async listChats(cursor = null) {
    const query = { user_id: this.user, limit: PAGE_SIZE, cursor };
    return (await this.request("GET", "/chats", { query })).json();
  }

  async getChat(chatId) {
    const path = `/chats/${encodeURIComponent(chatId)}`;
    return (await this.request("GET", path, { query: { user_id: this.user } })).json();
  }

  async stopTurn(chatId) {
    const path = `/chats/${encodeURIComponent(chatId)}/stop`;
    return (await this.request("POST", path, { body: { user_id: this.user } })).json();
  }

  async endChat(chatId) {
    const path = `/chats/${encodeURIComponent(chatId)}/end`;
    return (await this.request("POST", path, { body: { user_id: this.user } })).json();
  }

  // One turn over SSE. Calls onChatId once the chat's id is known and onDelta per piece;
  // resolves with the `done` event, rejects with an ApiError (or the AbortError of `signal`).
  async streamTurn({ chatId, text, signal, onChatId, onDelta }) {
    const body = { user_id: this.user, user_message: text };
    if (chatId) body.chat_id = chatId;
    const response = await this.request("POST", "/chat", {
      body, signal, accept: "text/event-stream",
    });
    return followEvents(response, onChatId, onDelta);
  }

  // The rest of a chat's latest answer from `after` (a position: code points, not UTF-16
  // units), as the same events; for a page reloaded while an answer was being written.
  async resumeAnswer({ chatId, after, signal, onDelta }) {
    const path = `/chats/${encodeURIComponent(chatId)}/stream`;
    const response = await this.request("GET", path, {
      query: { user_id: this.user, after }, signal, accept: "text/event-stream",
    });
    return followEvents(response, () => {}, onDelta);
  }
}

// The events of an answer's stream: deltas to onDelta, then the `done` event returned.
async function followEvents(response, onChatId, onDelta) {
  for await (const { event, data } of serverEvents(response.body)) {
    if (event === "delta") {
      if (data.chat_id) onChatId(data.chat_id);
      onDelta(data.delta);
    } else if (event === "done") {
      onChatId(data.chat_id);
      return data;
    } else if (event === "error") {
      throw new ApiError(200, data.error.code, data.error.message);
    }
  }
  throw new ApiError(200, "incomplete", "the answer's stream ended before it was complete");
}
