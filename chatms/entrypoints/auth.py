"""The shared service token, compared in constant time."""

from __future__ import annotations

import hmac

# HTTP's optional whitespace (RFC 9110 §5.6.3); str.strip() would also take NBSP and the
# like, so a token padded with them would pass.
OWS = " \t"


class TokenCheck:
    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    def accepts(self, presented: str | None) -> bool:
        """True for `<token>` or `Bearer <token>`; every miss takes the same path."""
        value = (presented or "").strip(OWS)
        if value[:7].lower() == "bearer ":
            value = value[7:].strip(OWS)
        return hmac.compare_digest(value.encode("utf-8", "surrogatepass"), self._expected)
