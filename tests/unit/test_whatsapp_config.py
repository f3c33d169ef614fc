"""WhatsApp settings: optional, checked at start, and the token is never described."""

from __future__ import annotations

import pytest

from chatms.config import ConfigError, load_settings

SID = "AC" + "0123456789abcdef" * 2


def test_whatsapp_is_off_until_both_credentials_are_set() -> None:
    """Twilio is configured only with both the Account SID and the Auth Token."""
    assert not load_settings({}).whatsapp.configured
    assert not load_settings({"TWILIO_ACCOUNT_SID": SID}).whatsapp.configured
    s = load_settings({"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "secret-token-xyz"})
    assert s.whatsapp.configured and s.whatsapp.api_base_url == "https://api.twilio.com"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TWILIO_ACCOUNT_SID": "not-a-sid"}, "TWILIO_ACCOUNT_SID"),
        ({"PUBLIC_BASE_URL": "example.com"}, "PUBLIC_BASE_URL"),
        ({"TWILIO_API_BASE_URL": "ftp://x"}, "TWILIO_API_BASE_URL"),
        ({"WHATSAPP_MAX_BODY_CHARS": "0"}, "WHATSAPP_MAX_BODY_CHARS"),
        ({"WHATSAPP_SEND_RATE": "fast"}, "WHATSAPP_SEND_RATE"),
        ({"WHATSAPP_DELIVERY_DEADLINE": "0"}, "WHATSAPP_DELIVERY_DEADLINE"),
        ({"WHATSAPP_RETRY_MAX_SECONDS": "-1"}, "WHATSAPP_RETRY_MAX_SECONDS"),
        ({"TWILIO_MESSAGING_BASE_URL": "messaging.twilio.com"}, "TWILIO_MESSAGING_BASE_URL"),
        ({"WHATSAPP_MAX_MEDIA_BYTES": "10"}, "WHATSAPP_MAX_MEDIA_BYTES"),
        ({"WHATSAPP_BURST_WINDOW_MS": "-1"}, "WHATSAPP_BURST_WINDOW_MS"),
        ({"WHATSAPP_VOICE_ENABLED": "maybe"}, "WHATSAPP_VOICE_ENABLED"),
        ({"WHATSAPP_DAILY_TOKENS": "lots"}, "WHATSAPP_DAILY_TOKENS"),
        ({"USER_MESSAGES_PER_MINUTE": "-5"}, "USER_MESSAGES_PER_MINUTE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    """Each bad WhatsApp value is refused with a message naming its variable."""
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_public_base_url_loses_its_trailing_slash() -> None:
    """PUBLIC_BASE_URL is joined with the request path, so a trailing slash is dropped."""
    s = load_settings({"PUBLIC_BASE_URL": "https://chat.example.com/"})
    assert s.whatsapp.public_base_url == "https://chat.example.com"


def test_describe_hides_the_auth_token() -> None:
    """The loggable description says the token is set, never what it is."""
    s = load_settings({"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "secret-token-xyz"})
    text = repr(s.describe())
    assert "secret-token-xyz" not in text and "'TWILIO_AUTH_TOKEN': 'set'" in text


def test_delivery_is_retried_for_a_day_by_default() -> None:
    """WhatsApp's reply window: an answer is retried for 24 h, at most 5 minutes apart."""
    w = load_settings({}).inbound
    assert (w.delivery_deadline, w.retry_max_seconds) == (86_400.0, 300.0)
    assert [w.backoff(n) for n in (1, 2, 3, 9, 10, 1000)] == [2, 4, 8, 300, 300, 300]


def test_media_burst_and_limit_defaults() -> None:
    """On by default for WhatsApp (anyone can write); off for the trusted doors."""
    s = load_settings({})
    w = s.whatsapp
    assert (w.voice_enabled, w.max_media_bytes, w.burst_window_ms) == (True, 16 * 2**20, 1500)
    assert w.messaging_base_url == "https://messaging.twilio.com"
    assert w.limits.enabled and not s.turns.door_limits.enabled
    assert s.upstream.transcription_model == "gpt-4o-mini-transcribe"
    assert "gpt-4o-mini" in s.upstream.vision_models


def test_lists_are_normalized() -> None:
    """Blocked numbers compare in one form; VISION_MODELS=none turns photos off."""
    s = load_settings({"WHATSAPP_BLOCKED_NUMBERS": "whatsapp:+55 11 99999-0000, +1 (555) 0100",
                       "VISION_MODELS": "none"})
    assert s.whatsapp.blocked_numbers == ("+5511999990000", "+15550100")
    assert s.upstream.vision_models == ()
