// What the page's modules share: who is signed in, the open chat, the answer streaming now.

import { ApiError } from "./api.js";

export const state = {
  api: null, // an Api while signed in
  current: { id: null, status: null }, // the open chat (id null: a new chat)
  turn: null, // { controller } while an answer streams
  signOut: null, // set by app.js: (message) => void
};

// A 401 in the middle of things: the token changed on the server; back to sign-in.
export function handleAuth(err) {
  if (err instanceof ApiError && err.code === "unauthenticated") {
    state.signOut("The access token is no longer accepted. Sign in again.");
    return true;
  }
  return false;
}
