// The answer streaming now: painting it as it grows, stopping it, leaving it.

import { handleAuth, state } from "./state.js";

// Stop the answer being streamed (Stop, Escape): the server stops it wherever it runs and
// keeps the part already written; this page's stream then ends as "stopped". A new chat
// has no id to name before its first words: the stop is sent as soon as it has one.
export function stopAnswer() {
  const turn = state.turn;
  if (!turn || turn.stopping) return;
  turn.stopping = true;
  if (turn.chatId) sendStop(turn);
}

// The turn learned its chat's id: a stop asked for meanwhile goes out now.
export function named(turn, chatId) {
  const waiting = turn.stopping && !turn.chatId;
  turn.chatId = chatId;
  if (waiting) sendStop(turn);
}

function sendStop(turn) {
  state.api.stopTurn(turn.chatId).catch((err) => {
    turn.stopping = false;
    if (!handleAuth(err)) turn.controller.abort();
  });
}

// Stop following the answer here (another chat opened, signed out): it goes on being
// written on the server, and opening its chat again picks it up where it is.
export function leaveAnswer() {
  state.turn?.controller.abort();
}

// Paints `view` with the answer at most once per frame; `text` is what it holds so far.
export function painter(view, text, afterPaint) {
  const painted = { text, pending: false };
  painted.paint = () => {
    painted.pending = false;
    view.setContent(painted.text);
    afterPaint();
  };
  painted.onDelta = (delta) => {
    painted.text += delta;
    if (!painted.pending) {
      painted.pending = true;
      requestAnimationFrame(painted.paint);
    }
  };
  return painted;
}

// A position is a length in code points; JavaScript strings count UTF-16 units.
export function positionOf(text) {
  let position = 0;
  for (const _ of text) position += 1;
  return position;
}
