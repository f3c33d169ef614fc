"""WhatsApp text rules: reset commands and splitting answers into parts Twilio accepts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatms.adapters.twilio import WHATSAPP_PART_LIMIT
from chatms.domain.texting import is_reset, split_message, utf16_len


@pytest.mark.parametrize("body", ["/reset", "/RESET", "  /New ", "/restart\n"])
def test_reset_and_synonyms_in_any_case(body: str) -> None:
    """/reset, /new and /restart are commands whatever their case and surrounding spaces."""
    assert is_reset(body)


@pytest.mark.parametrize("body", ["reset", "/reset please", "/resets", ""])
def test_other_text_is_not_a_reset(body: str) -> None:
    """Only the bare command resets; text around it makes it a normal message."""
    assert not is_reset(body)


def test_short_text_is_one_part() -> None:
    """An answer within the limit goes out whole."""
    assert split_message("Hello there.", 1600) == ["Hello there."]
    assert split_message("   ", 1600) == []


def test_paragraphs_are_preferred() -> None:
    """A cut falls at the last paragraph break that fits."""
    first, second = "a" * 900, "b " * 400
    parts = split_message(f"{first}\n\n{second.strip()}. More text here.", limit=1600)
    assert parts == [first, f"{second.strip()}. More text here."]


def test_sentences_before_words() -> None:
    """Without a paragraph break the cut falls after the last whole sentence that fits."""
    sentence = "This is a sentence of words. "
    text = sentence * 100
    parts = split_message(text, limit=200)
    assert all(p.endswith("words.") for p in parts)
    assert all(utf16_len(p) <= 200 for p in parts)


def test_words_before_hard_split() -> None:
    """Without sentence ends the cut falls between words; a giant word is cut hard."""
    parts = split_message("word " * 50, limit=23)
    assert all(p.replace("word", "").strip() == "" for p in parts)
    assert split_message("x" * 50, limit=20) == ["x" * 20, "x" * 20, "x" * 10]


def test_emoji_count_as_two_units() -> None:
    """Characters outside the BMP count twice, as Twilio counts them, and are never cut."""
    text = "😀" * 1000  # 2000 UTF-16 units
    parts = split_message(text, 1600)
    assert [utf16_len(p) for p in parts] == [1600, 400]
    assert "".join(parts) == text


@given(st.text(alphabet=st.sampled_from(["a", "b", " ", "\n", ".", "é", "😀", "!"]),
               max_size=3000),
       st.integers(min_value=2, max_value=400))
def test_parts_fit_and_keep_all_text_in_order(text: str, limit: int) -> None:
    """Every part fits the limit and the parts hold all the text in order (only cut whitespace
    goes)."""
    parts = split_message(text, limit)
    assert all(0 < utf16_len(p) <= limit for p in parts)
    assert "".join("".join(parts).split()) == "".join(text.split())


def test_whatsapp_parts_are_twilio_s_1600() -> None:
    """The WhatsApp channel splits at Twilio's 1600 units."""
    assert WHATSAPP_PART_LIMIT == 1600
    parts = split_message("word " * 1000, WHATSAPP_PART_LIMIT)
    assert [utf16_len(p) <= 1600 for p in parts] == [True] * 4


def test_no_tiny_first_part_before_a_long_word() -> None:
    """A space early in the text, then 1600 units without one: the first part is not the
    first word alone but as much as fits."""
    text = "echo: " + "x" * 1600
    parts = split_message(text, WHATSAPP_PART_LIMIT)
    assert [utf16_len(p) for p in parts] == [1600, 6]
    assert "".join(parts) == text


@given(st.lists(st.text(alphabet="ab.", min_size=1, max_size=60), max_size=200).map(" ".join),
       st.integers(min_value=20, max_value=400))
def test_every_part_but_the_last_is_of_useful_length(text: str, limit: int) -> None:
    """Words and sentences: each part but the last holds at least half the limit."""
    parts = split_message(text, limit)
    assert all(utf16_len(p) >= limit // 2 for p in parts[:-1])
