"""Each layer that keeps secrets out of logs, tested alone: either one missing is caught."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from chatms.redaction import CHATTY_LIBRARIES, RedactSecrets, protect

SECRET = "sk-test-0123456789abcdef"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Handler, io.StringIO]]:
    """A handler on the root logger at DEBUG; levels and handlers restored afterwards."""
    root = logging.getLogger()
    saved = root.level, {name: logging.getLogger(name).level for name in CHATTY_LIBRARIES}
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler, out
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)


def test_the_filter_alone_redacts_a_secret_in_message_and_arguments() -> None:
    """RedactSecrets rewrites a record holding the secret, in its text or its arguments."""
    redact = RedactSecrets([SECRET, None, "short"])
    for record in (
        logging.LogRecord("x", logging.INFO, __file__, 1, f"key {SECRET}", None, None),
        logging.LogRecord("x", logging.INFO, __file__, 1, "key %s!", (SECRET,), None),
    ):
        assert redact.filter(record)
        assert record.getMessage() in ("key [redacted]", "key [redacted]!")
    untouched = logging.LogRecord("x", logging.INFO, __file__, 1, "short words", None, None)
    redact.filter(untouched)
    assert untouched.getMessage() == "short words"  # secrets under 8 characters are ignored


def test_protect_redacts_what_a_quiet_logger_still_writes(captured) -> None:
    """Through `protect`, a secret logged at INFO by our own code is redacted."""
    handler, out = captured
    protect(handler, [SECRET])
    logging.getLogger("chatms.test").info("upstream said: %s", SECRET)
    assert SECRET not in out.getvalue() and "upstream said: [redacted]" in out.getvalue()


def test_protect_quiets_the_libraries_that_dump_raw_headers(captured) -> None:
    """Through `protect`, hpack & co. no longer write DEBUG lines, even with no secret in them."""
    handler, out = captured
    protect(handler, [SECRET])
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).debug("raw header dump from %s", name)
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    assert out.getvalue() == ""
