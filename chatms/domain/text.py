"""Text rules shared by every door and adapter: what PostgreSQL text can hold. No I/O."""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"

# PostgreSQL text cannot hold NUL, and UTF-8 cannot encode a lone surrogate (which JSON's
# "\ud800" escape, or bytes decoded with surrogatepass, put in a Python str). A surrogate
# that is still in a str is always lone: the JSON decoder joins valid pairs.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` with each NUL and lone surrogate replaced by U+FFFD; `text` itself if none."""
    if text.isascii():
        return text.replace("\x00", REPLACEMENT) if "\x00" in text else text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def is_storable(text: str) -> bool:
    """Whether `text` holds neither NUL nor a lone surrogate."""
    if text.isascii():
        return "\x00" not in text
    return _UNSTORABLE.search(text) is None
