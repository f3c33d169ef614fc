"""An incremental Server-Sent Events decoder over raw bytes.

Working on bytes skips the text decoding and line objects of a generic line iterator, and
handing back every event a network read brought lets the caller merge a backlog of deltas
into one message when its client reads slower than the upstream writes.
"""

from __future__ import annotations


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the `data` of each completed event."""

    __slots__ = ("_data", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._tail + chunk if self._tail else chunk
        lines = buf.split(b"\n")
        self._tail = lines.pop()
        events: list[bytes] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:  # a blank line ends the event
                if self._data:
                    events.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            # Other fields (event, id, retry) and comments (": keep-alive") carry nothing for us.
        return events

    def close(self) -> list[bytes]:
        """Events left when the stream ended without a final blank line."""
        events = self.feed(b"\n\n") if self._tail or self._data else []
        self._tail = b""
        return events
