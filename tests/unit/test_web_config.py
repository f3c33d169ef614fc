"""Settings of the web page and of CORS: defaults, exact origins, one clear line when wrong."""

from __future__ import annotations

import pytest

from chatms.config import ConfigError, load_settings


def test_web_page_on_and_cors_closed_by_default() -> None:
    s = load_settings({})
    assert s.web.ui_enabled is True
    assert s.web.cors_allow_origins == ()


def test_web_page_can_be_turned_off() -> None:
    assert load_settings({"WEB_UI_ENABLED": "false"}).web.ui_enabled is False


def test_origins_are_exact_and_normalized_as_browsers_send_them() -> None:
    s = load_settings({"CORS_ALLOW_ORIGINS":
                       " https://App.Example.com:443 , http://localhost:3000,http://[::1]:8081/,"
                       "https://app.example.com"})
    assert s.web.cors_allow_origins == (
        "https://app.example.com", "http://localhost:3000", "http://[::1]:8081")


@pytest.mark.parametrize(
    "value",
    ["*", "app.example.com", "https://app.example.com/path", "ftp://files.example.com",
     "https://user:pw@app.example.com", "https://app.example.com?x=1", "https://:8080",
     "https://app.example.com:99999"],
)
def test_bad_origins_name_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="CORS_ALLOW_ORIGINS"):
        load_settings({"CORS_ALLOW_ORIGINS": value})


def test_web_ui_flag_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="WEB_UI_ENABLED"):
        load_settings({"WEB_UI_ENABLED": "maybe"})
