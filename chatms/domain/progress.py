"""Positions in a streamed answer, so that a stream can be picked up where it was left.

A position is the answer's length in Unicode code points (Python's `len`) after an event.
It does not depend on how deltas were merged on the way (a burst, a slow reader, a flush
to the database), so a client resuming through another replica lines up exactly.
"""

from __future__ import annotations

from bisect import bisect_right

from chatms.domain.errors import InvalidInput


class AnswerLog:
    """The answer of a running turn as it grows, readable from any position.

    The turn appends each delta as it arrives (O(1)); a reader behind gets everything it
    missed merged into one piece.
    """

    __slots__ = ("_ends", "_parts", "length")

    def __init__(self, text: str = "") -> None:
        self._parts: list[str] = [text] if text else []
        self._ends: list[int] = [len(text)] if text else []
        self.length = len(text)

    def append(self, delta: str) -> int:
        """Add a delta; returns the position after it."""
        if delta:
            self.length += len(delta)
            self._parts.append(delta)
            self._ends.append(self.length)
        return self.length

    def text(self) -> str:
        """The whole answer so far (joined once, then kept joined)."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
            self._ends = [self.length]
        return self._parts[0] if self._parts else ""

    def after(self, position: int) -> str:
        """The text past `position` ("" when there is none yet)."""
        if position >= self.length:
            return ""
        first = bisect_right(self._ends, position)  # the first part ending past `position`
        part = self._parts[first]
        head = part[position - (self._ends[first] - len(part)):]
        return head + "".join(self._parts[first + 1:]) if first + 1 < len(self._parts) else head


class Gap(Exception):
    """A piece starts past what the reader has: something in between was missed."""


class Follower:
    """A reader of an answer that arrives in pieces, possibly repeated or overlapping.

    Another replica's resumer hears the flushed answer in pieces (`start`, text), and may
    hear one twice (a reload from the database after a notification it also got). Only the
    text past what it already sent comes out, so the client sees each character once.
    """

    __slots__ = ("position",)

    def __init__(self, after: int) -> None:
        if after < 0:
            raise InvalidInput("after must not be negative")
        self.position = after

    def take(self, start: int, text: str) -> str:
        """The new text of the piece at `start`; raises Gap when text before it is missing."""
        end = start + len(text)
        if end <= self.position:
            return ""
        if start > self.position:
            raise Gap(f"piece starts at {start}, the reader is at {self.position}")
        new = text[self.position - start:]
        self.position = end
        return new
