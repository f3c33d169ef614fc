"""Resuming from any position gives exactly the rest of the answer, however it was split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatms.domain.errors import InvalidInput
from chatms.domain.progress import AnswerLog, Follower, Gap


@st.composite
def split_answer(draw: st.DrawFn) -> tuple[str, list[str], list[list[str]], int]:
    """An answer, its deltas, a grouping of the deltas into merged pieces, and a position."""
    deltas = draw(st.lists(st.text(min_size=1, max_size=8), max_size=30))
    answer = "".join(deltas)
    groups: list[list[str]] = []
    i = 0
    while i < len(deltas):
        size = draw(st.integers(1, len(deltas) - i))
        groups.append(deltas[i:i + size])
        i += size
    position = draw(st.integers(0, len(answer)))
    return answer, deltas, groups, position


@settings(max_examples=400, deadline=None)
@given(case=split_answer(), reads=st.lists(st.integers(0, 30), max_size=5))
def test_the_running_turn_serves_any_position(
    case: tuple[str, list[str], list[list[str]], int], reads: list[int]
) -> None:
    """In the turn's own replica: read after every delta or after merged groups, any join."""
    answer, deltas, groups, position = case
    log = AnswerLog()
    positions = [log.append(d) for d in deltas]
    assert positions == [len("".join(deltas[:i + 1])) for i in range(len(deltas))]
    for n in reads:  # joining (a flush) in between changes nothing
        if n % 3 == 0:
            log.text()
    assert log.after(position) == answer[position:]
    assert log.text() == answer
    assert log.after(position) == answer[position:]
    # A reader catching up group by group gets each piece once, in order.
    reader, got, seen = AnswerLog(), [], 0
    for group in groups:
        for delta in group:
            reader.append(delta)
        piece = reader.after(max(seen, position))
        got.append(piece)
        seen = reader.length
    assert "".join(got) == answer[position:]


@settings(max_examples=400, deadline=None)
@given(case=split_answer(), repeats=st.lists(st.integers(0, 30), max_size=6))
def test_another_replica_resumes_from_any_position(
    case: tuple[str, list[str], list[list[str]], int], repeats: list[int]
) -> None:
    """From flushed pieces, some heard twice (a reload and a notification): rest, once."""
    answer, _, groups, position = case
    pieces, start = [], 0
    for group in groups:
        text = "".join(group)
        pieces.append((start, text))
        start += len(text)
    delivered = []
    for i, piece in enumerate(pieces):
        delivered.append(piece)
        for r in repeats:
            if r <= i:
                delivered.append(pieces[r])  # an old piece again
    follower = Follower(position)
    out = "".join(follower.take(s, t) for s, t in delivered)
    assert out == answer[position:]
    assert follower.position == max(position, len(answer))


def test_a_missed_piece_is_a_gap_not_wrong_text() -> None:
    follower = Follower(2)
    assert follower.take(0, "abcd") == "cd"
    with pytest.raises(Gap):
        follower.take(6, "gh")
    assert follower.take(4, "efgh") == "efgh"


def test_positions_count_code_points_not_bytes_or_utf16() -> None:
    log = AnswerLog()
    assert log.append("héllo ") == 6
    assert log.append("🙂") == 7  # one code point: two UTF-16 units, four UTF-8 bytes
    assert log.after(6) == "🙂"


def test_a_negative_position_is_refused() -> None:
    with pytest.raises(InvalidInput):
        Follower(-1)
