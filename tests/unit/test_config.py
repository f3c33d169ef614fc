"""Settings: defaults, and one clear line naming the variable for each bad value."""

from __future__ import annotations

import pytest

from chatms.config import ConfigError, load_settings


def test_defaults_follow_the_course() -> None:
    """With nothing set, the ports and model are the documented defaults."""
    s = load_settings({})
    assert (s.server.grpc_port, s.server.web_port) == (50051, 8080)
    assert s.model.context_window == 128_000 and s.database.url is None
    assert s.upstream.base_url == "https://api.openai.com/v1"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GRPC_SERVER_PORT": "http"}, "GRPC_SERVER_PORT"),
        ({"TEMPERATURE": "3"}, "TEMPERATURE"),
        ({"N": "2"}, "N=2"),
        ({"MODEL": "my-local-model"}, "MODEL_MAX_TOKENS"),
        ({"MODEL_MAX_TOKENS": "1000", "MAX_TOKENS": "999"}, "MAX_TOKENS"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"OPENAI_BASE_URL": "api.openai.com"}, "OPENAI_BASE_URL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    """Each bad value is refused with a message naming its variable."""
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_stop_sequences_are_comma_separated() -> None:
    """STOP takes one or more sequences; none at all is the default."""
    assert load_settings({"STOP": "END,###"}).model.stop == ("END", "###")
    assert load_settings({}).model.stop == ()


def test_unknown_model_works_with_an_explicit_window() -> None:
    """An OpenAI-compatible model the table does not know needs MODEL_MAX_TOKENS."""
    s = load_settings({"MODEL": "llama3", "MODEL_MAX_TOKENS": "8192"})
    assert s.model.budget.context_window == 8192


def test_the_answer_limit_follows_max_tokens_unless_set() -> None:
    """MAX_ANSWER_CHARS defaults to 32 characters per token of MAX_TOKENS (of each chat)."""
    model = load_settings({"MAX_TOKENS": "1000"}).model
    assert (model.answer_limit(1000), model.answer_limit(10)) == (32_000, 320)
    fixed = load_settings({"MAX_ANSWER_CHARS": "5000"}).model
    assert fixed.answer_limit(1000) == fixed.answer_limit(10) == 5000


def test_models_allowlist_with_known_and_given_windows() -> None:
    """MODELS names the other models a chat may use; MODEL is always allowed."""
    s = load_settings({"MODELS": "gpt-4, llama3:8b=8192, gpt-4o-mini"})
    assert s.model.windows == {"gpt-4o-mini": 128_000, "gpt-4": 8_192, "llama3:8b": 8_192}
    with pytest.raises(ConfigError, match=r"MODELS.*llama3"):
        load_settings({"MODELS": "llama3"})
    assert load_settings({}).model.windows == {"gpt-4o-mini": 128_000}


def test_context_settings() -> None:
    """Summaries and titles are on by default; each setting is checked."""
    s = load_settings({}).context
    assert (s.strategy, s.titles, s.summary_max_tokens, s.summary_model) == (
        "summarize", True, 512, None)
    assert load_settings({"CONTEXT_STRATEGY": "Truncate"}).context.strategy == "truncate"
    with pytest.raises(ConfigError, match="CONTEXT_STRATEGY"):
        load_settings({"CONTEXT_STRATEGY": "forget"})


def test_network_edge_defaults_and_bad_values() -> None:
    edge, server = load_settings({}).edge, load_settings({}).server
    assert (edge.max_connections, edge.body_timeout, edge.grpc_max_resets) == (2000, 10.0, 200)
    assert edge.grpc_max_concurrent_streams == 100 and edge.grpc_idle_timeout == 300.0
    assert server.ops_port == 0 and server.metrics_token is None
    for name, value in (("GRPC_MAX_RESETS", "0"), ("MAX_CONNECTIONS", "8"),
                        ("BODY_TIMEOUT", "soon"), ("OPS_PORT", "70000")):
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value})


def test_metrics_token_is_a_secret() -> None:
    settings = load_settings({"METRICS_TOKEN": "scrape-me"})
    assert "scrape-me" in settings.secrets
    assert settings.describe()["METRICS_TOKEN"] == "set"
