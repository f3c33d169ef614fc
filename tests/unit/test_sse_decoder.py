"""The SSE decoder, fed bytes split anywhere."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatms.adapters.sse import SSEDecoder

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
