"""An incremental Server-Sent Events decoder over raw bytes, linear in what it is fed.

Working on bytes skips the text decoding and line objects of a generic line iterator, and
handing back every event a network read brought lets the caller merge a backlog of deltas
into one message when its client reads slower than the upstream writes.

A line that arrives over many reads is kept as a list of pieces and joined once, when its
newline comes: re-joining it on every read would make a long line cost the square of its
length. No line and no event may exceed `limit` bytes.
"""

from __future__ import annotations

DEFAULT_LIMIT = 1 << 20  # bytes of one line or event; OpenAI's are a few hundred


class EventTooLarge(ValueError):
    """A line or an event is longer than the decoder's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an SSE line or event is larger than {limit} bytes")
        self.limit = limit


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the `data` of each completed event."""

    __slots__ = ("_data", "_data_size", "_partial", "_partial_size", "copied", "limit")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._partial: list[bytes] = []  # the unfinished last line, as it arrived
        self._partial_size = 0
        self._data: list[bytes] = []
        self._data_size = 0
        # Bytes copied to join lines that spanned reads: at most twice what was fed.
        self.copied = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        partial = self._partial
        if partial:
            partial.append(chunk)
            if b"\n" not in chunk:
                self._partial_size += len(chunk)
                if self._partial_size > self.limit:
                    raise EventTooLarge(self.limit)
                return []
            buf = b"".join(partial)
            self.copied += len(buf)
        else:
            buf = chunk
        lines = buf.split(b"\n")
        tail = lines.pop()
        if tail:
            self._partial, self._partial_size = [tail], len(tail)
            if self._partial_size > self.limit:
                raise EventTooLarge(self.limit)
        elif partial:
            self._partial, self._partial_size = [], 0
        if len(buf) > self.limit and max(map(len, lines), default=0) > self.limit:
            raise EventTooLarge(self.limit)
        events: list[bytes] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:  # a blank line ends the event
                if self._data:
                    events.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                    self._data, self._data_size = [], 0
            elif line.startswith(b"data:"):
                self._data.append(line[6:] if line.startswith(b"data: ") else line[5:])
                self._data_size += len(line)
                if self._data_size > self.limit:  # many lines of one event
                    raise EventTooLarge(self.limit)
            # Other fields (event, id, retry) and comments (": keep-alive") carry nothing for us.
        return events

    def close(self) -> list[bytes]:
        """Events left when the stream ended without a final blank line."""
        events = self.feed(b"\n\n") if self._partial or self._data else []
        self._partial, self._partial_size = [], 0
        return events
