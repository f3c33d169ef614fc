"""The SSE decoder, fed bytes split anywhere."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatms.adapters.sse import EventTooLarge, SSEDecoder

STREAM = (
    b": keep-alive\n\n"
    b"data: {\"a\": 1}\n\n"
    b"event: ping\r\ndata: two\r\ndata: lines\r\n\r\n"
    b"id: 7\nretry: 10\ndata:no-space\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = [b'{"a": 1}', b"two\nlines", b"no-space", b"[DONE]"]


def test_whole_stream() -> None:
    """Comments and other fields are skipped; multi-line data is joined with newlines."""
    assert SSEDecoder().feed(STREAM) == EVENTS


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    """However the bytes are split across reads, the same events come out in order."""
    decoder, events, start = SSEDecoder(), [], 0
    for cut in [*sorted(cuts), len(STREAM)]:
        events += decoder.feed(STREAM[start:cut])
        start = cut
    assert events + decoder.close() == EVENTS


def test_unterminated_last_event_is_flushed_on_close() -> None:
    """An event cut off before its blank line still comes out when the stream closes."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: partial") == []
    assert decoder.close() == [b"partial"]


def _feed_in_pieces(decoder: SSEDecoder, data: bytes, size: int) -> list[bytes]:
    events: list[bytes] = []
    for start in range(0, len(data), size):
        events += decoder.feed(data[start:start + size])
    return events


def test_a_line_over_many_reads_is_copied_a_bounded_number_of_times() -> None:
    """Work is linear: a line that arrives in n pieces is joined once, not n times.

    Counted in bytes copied, not in seconds: at every size the decoder copies at most twice
    what it was fed (re-joining the line on each read would copy about n/2 times the line).
    """
    for size in (64 * 1024, 1024 * 1024, 4 * 1024 * 1024):
        line = b'data: {"x": "' + b"a" * size + b'"}\n\n'
        decoder = SSEDecoder(limit=8 * 1024 * 1024)
        assert _feed_in_pieces(decoder, line, 512) == [line[6:-2]]
        assert decoder.copied <= 2 * len(line)


def test_a_huge_line_without_newline_is_refused_at_the_limit() -> None:
    """A 64 MB line that never ends stops at the limit, having held at most the limit."""
    decoder = SSEDecoder(limit=1 << 20)
    piece = b"data: " + b"a" * (64 * 1024 - 6)
    fed = 0
    with pytest.raises(EventTooLarge):
        while fed < 64 * 1024 * 1024:
            decoder.feed(piece)
            fed += len(piece)
    assert fed <= (1 << 20) + len(piece)


def test_a_64_mb_line_finishes_when_the_limit_allows_it() -> None:
    """The old decoder re-joined the line on every read (about 1000 x 32 MB copied here)."""
    decoder = SSEDecoder(limit=80 * 1024 * 1024)
    line = b"data: " + b"b" * (64 * 1024 * 1024) + b"\n\n"
    [event] = _feed_in_pieces(decoder, line, 64 * 1024)
    assert len(event) == 64 * 1024 * 1024 and decoder.copied <= 2 * len(line)


@pytest.mark.parametrize("stream", [
    b"data: " + b"x" * 2000 + b"\n\n",  # one long line in one read
    b"".join(b"data: " + b"y" * 100 + b"\n" for _ in range(30)) + b"\n",  # many short lines
    b"event: " + b"z" * 2000 + b"\n\n",  # a field we ignore is bounded too
])
def test_lines_and_events_over_the_limit_are_refused(stream: bytes) -> None:
    with pytest.raises(EventTooLarge):
        SSEDecoder(limit=1024).feed(stream)


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_a_limit_the_stream_fits_changes_nothing(cuts: list[int]) -> None:
    """With the limit at the longest event, any split gives the events unchanged."""
    decoder, events, start = SSEDecoder(limit=64), [], 0
    for cut in [*sorted(cuts), len(STREAM)]:
        events += decoder.feed(STREAM[start:cut])
        start = cut
    assert events + decoder.close() == EVENTS
