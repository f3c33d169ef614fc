"""WhatsApp media, burst and blocklist rules (no I/O)."""

from __future__ import annotations

from chatms.domain.texting import (
    AUDIO,
    IMAGE,
    OTHER,
    image_placeholder,
    join_burst,
    media_kind,
    phone_number,
)


def test_media_kinds() -> None:
    assert media_kind("audio/ogg; codecs=opus") == AUDIO and media_kind("AUDIO/MPEG") == AUDIO
    assert [media_kind(t) for t in ("image/jpeg", "image/png", "image/webp")] == [IMAGE] * 3
    for other in ("image/gif", "video/mp4", "application/pdf", "text/vcard", ""):
        assert media_kind(other) == OTHER


def test_placeholder_keeps_the_caption() -> None:
    assert image_placeholder("  my cat ") == "[image] my cat"
    assert image_placeholder("") == "[image]"


def test_burst_joins_in_order_without_blanks() -> None:
    assert join_burst(["oi", " ", "tudo bem?", "me ajuda "]) == "oi\ntudo bem?\nme ajuda"


def test_phone_numbers_compare_in_one_form() -> None:
    assert phone_number("whatsapp:+55 11 99999-0000") == "+5511999990000"
    assert phone_number("+5511999990000") == phone_number("whatsapp:+5511999990000")
