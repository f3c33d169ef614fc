"""Text-channel rules: the reset command, and splitting long answers into sendable parts.

Lengths are counted in UTF-16 code units, as WhatsApp (through Twilio) and Telegram count
them: an emoji outside the BMP counts as two. No I/O.
"""

from __future__ import annotations

import re

RESET_COMMANDS = frozenset({"/reset", "/new", "/restart"})

_SENTENCE_END = re.compile(r"[.!?…](?=\s)")
# Twilio's `From`: "whatsapp:" and an E.164 number, e.g. whatsapp:+5511999990000.
_ADDRESS = re.compile(r"whatsapp:\+[0-9]{1,15}")


def looks_like_whatsapp(user_id: str) -> bool:
    return user_id[:9].lower() == "whatsapp:"


def is_whatsapp_address(user_id: str) -> bool:
    return _ADDRESS.fullmatch(user_id) is not None


def is_reset(body: str) -> bool:
    """True for `/reset` and its synonyms, in any case, with surrounding spaces."""
    return body.strip().lower() in RESET_COMMANDS


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fitting_prefix(text: str, limit: int) -> int:
    """The most code points of `text` whose UTF-16 length is at most `limit`."""
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)


def _cut(text: str, limit: int) -> int:
    """Where to end the next part: the last paragraph, else sentence, else word boundary.

    Only a boundary in the second half of the part counts: an early one would send a part of
    a few characters ("echo:" before 1600 letters without a space). Without one, the part is
    cut hard at the limit.
    """
    window = text[: _fitting_prefix(text, limit)]
    useful = len(window) // 2
    paragraph = window.rfind("\n\n")
    if paragraph >= useful and paragraph > 0:
        return paragraph
    sentences = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() < len(window)]
    if sentences and sentences[-1] >= useful:
        return sentences[-1]
    spaces = [i for i, ch in enumerate(window) if ch.isspace() and i > 0]
    if spaces and spaces[-1] >= useful:
        return spaces[-1]
    return max(len(window), 1)  # no boundary late enough: hard split


def split_message(text: str, limit: int) -> list[str]:
    """Split `text` into parts of at most `limit` UTF-16 units, in order.

    Whitespace at a cut is dropped; nothing else is lost or reordered.
    """
    if limit < 2:
        raise ValueError("limit must be at least 2 (one character outside the BMP)")
    rest = text.strip()
    parts: list[str] = []
    # Each pass removes at least one character, so the loop ends within len(text) passes.
    while utf16_len(rest) > limit:
        at = _cut(rest, limit)
        head = rest[:at].rstrip()
        if head:
            parts.append(head)
        rest = rest[at:].lstrip()
    if rest:
        parts.append(rest)
    return parts


# What people send on WhatsApp besides text, and what chatms does with it.
AUDIO = "audio"
IMAGE = "image"
OTHER = "other"
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
IMAGE_PLACEHOLDER = "[image]"
DEFAULT_IMAGE_QUESTION = "What is in this image?"


def media_kind(content_type: str) -> str:
    """AUDIO for any audio/*, IMAGE for the photo formats the model reads, else OTHER."""
    base = content_type.split(";", 1)[0].strip().lower()
    if base.startswith("audio/"):
        return AUDIO
    if base in IMAGE_TYPES:
        return IMAGE
    return OTHER


def image_placeholder(caption: str) -> str:
    """What later turns see of a photo: the bytes are not kept, the caption is."""
    caption = caption.strip()
    return f"{IMAGE_PLACEHOLDER} {caption}" if caption else IMAGE_PLACEHOLDER


def join_burst(texts: list[str]) -> str:
    """Messages sent in a quick row, as one user message, in arrival order."""
    return "\n".join(text.strip() for text in texts if text.strip())


def phone_number(address: str) -> str:
    """`whatsapp:+55 11 99999-0000` and `+5511999990000` alike become `+5511999990000`."""
    bare = address.strip().lower().removeprefix("whatsapp:")
    digits = "".join(ch for ch in bare if ch.isdigit())
    return "+" + digits if digits else bare
