"""Settings: the engine's records nested, every variable read by one reader, validated, secrets
kept out of repr and out of error messages."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from backend_ai.app.extension import get_state
from backend_ai.app.factory import create_app
from backend_ai.app.settings import Settings
from backend_ai.errors import ConfigError
from backend_ai.streaming import PoolSettings, RunOptions
from backend_ai.streaming.config import PRESETS, Mode
from backend_ai.streaming.executor import DEFAULT_MAX_WORKERS


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings.openai_api_key is None
    assert settings.openai_base_url is None
    assert settings.run.heartbeat_s == 15.0
    assert settings.max_text_chars == 4000
    assert settings.models == {"simple": "gpt-4o-mini", "medium": "gpt-4o", "complex": "gpt-4o"}
    assert settings.compare_models == ()
    assert settings.upstream_is_simulator is False
    assert settings.http.max_keepalive_connections == 10
    assert settings.http.max_connections == 20
    assert settings.history_db_path is not None
    assert settings.history_db_path.endswith("/.local/state/backend_ai/history.sqlite3")


def test_nested_defaults_are_the_engines_own_records() -> None:
    """Not a copy of the engine's defaults that could drift: its records, built by its classes."""
    defaults = {f.name: f for f in fields(Settings)}
    assert defaults["run"].default_factory is RunOptions
    assert defaults["http"].default_factory is PoolSettings
    assert defaults["max_workers"].default is DEFAULT_MAX_WORKERS
    assert Settings().run == RunOptions()
    assert Settings().http == PoolSettings()
    assert Settings().models == {name: preset.model for name, preset in PRESETS.items()}
    # The environment changes only what it sets.
    assert Settings.from_env({}).run == RunOptions()
    assert Settings.from_env({}).http == PoolSettings()


def test_run_options_of_a_request_are_the_settings_with_its_mode() -> None:
    run = RunOptions(heartbeat_s=2.5, max_parallel=3, include_usage=False)
    app = create_app(Settings(openai_api_key="k", history_db_path=None, run=run))
    try:
        got = get_state(app).run_options("ordered")
        assert got == RunOptions(
            mode=Mode.ORDERED, heartbeat_s=2.5, max_parallel=3, include_usage=False
        )
    finally:
        get_state(app).close()


def test_run_mode_belongs_to_the_request() -> None:
    with pytest.raises(ConfigError, match=r"run\.mode is chosen by each request"):
        Settings(run=RunOptions(mode=Mode.ORDERED))


def test_history_defaults_to_the_user_state_directory() -> None:
    settings = Settings.from_env({"XDG_STATE_HOME": "/var/lib/me"})
    assert settings.history_db_path == "/var/lib/me/backend_ai/history.sqlite3"
    assert Settings.from_env({"BACKEND_AI_HISTORY_DB": "/tmp/h.db"}).history_db_path == "/tmp/h.db"


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "OPENAI_API_KEY": "sk-x",
            "OPENAI_BASE_URL": "http://127.0.0.1:1234/v1",
            "BACKEND_AI_UPSTREAM_SIMULATOR": "1",
            "BACKEND_AI_SIM_DEFAULTS": '{"ttft_ms": 300}',
            "BACKEND_AI_MODEL_SIMPLE": "small",
            "BACKEND_AI_MODEL_MEDIUM": "medium",
            "BACKEND_AI_MODEL_COMPLEX": "large",
            "BACKEND_AI_COMPARE_MODELS": "a, b ,c",
            "BACKEND_AI_MAX_WORKERS": "7",
            "BACKEND_AI_MAX_PARALLEL": "2",
            "BACKEND_AI_DEADLINE_S": "off",
            "BACKEND_AI_STALL_TIMEOUT_S": "12.5",
            "BACKEND_AI_HEARTBEAT_S": "0.5",
            "BACKEND_AI_QUEUE_SIZE": "64",
            "BACKEND_AI_BACKPRESSURE_TIMEOUT_S": "3",
            "BACKEND_AI_MAX_RETRY_WAIT_S": "4",
            "BACKEND_AI_MAX_RATE_LIMIT_RETRIES": "0",
            "BACKEND_AI_INCLUDE_USAGE": "false",
            "BACKEND_AI_HTTP_MAX_CONNECTIONS": "40",
            "BACKEND_AI_HTTP_MAX_KEEPALIVE": "20",
            "BACKEND_AI_MAX_TEXT_CHARS": "100",
            "BACKEND_AI_MAX_CONTENT_LENGTH": "2048",
            "BACKEND_AI_AUTH_TOKEN": "t0k",
            "BACKEND_AI_CORS_ORIGINS": "https://a.example",
            "BACKEND_AI_HISTORY_DB": "off",
            "BACKEND_AI_HISTORY_QUEUE_SIZE": "5",
            "BACKEND_AI_HISTORY_MAX_AGE_DAYS": "7.5",
            "BACKEND_AI_HISTORY_MAX_ROWS": "off",
            "BACKEND_AI_SEND_TIMEOUT_S": "4",
            "BACKEND_AI_ACCESS_LOG": "0",
        }
    )
    assert settings.openai_api_key == "sk-x"
    assert settings.openai_base_url == "http://127.0.0.1:1234/v1"
    assert settings.upstream_is_simulator is True
    assert settings.sim_defaults == {"ttft_ms": 300}
    assert settings.models == {"simple": "small", "medium": "medium", "complex": "large"}
    assert settings.compare_models == ("a", "b", "c")
    assert settings.max_workers == 7
    assert settings.run == RunOptions(
        max_parallel=2,
        deadline_s=None,
        stall_timeout_s=12.5,
        heartbeat_s=0.5,
        queue_size=64,
        backpressure_timeout_s=3,
        max_retry_wait_s=4,
        max_rate_limit_retries=0,
        include_usage=False,
    )
    assert settings.http.max_connections == 40
    assert settings.http.max_keepalive_connections == 20
    assert settings.max_text_chars == 100
    assert settings.max_content_length == 2048
    assert settings.auth_token == "t0k"
    assert settings.cors_origins == ("https://a.example",)
    assert settings.history_db_path is None
    assert settings.history_queue_size == 5
    assert settings.history_max_age_days == 7.5
    assert settings.history_max_rows is None
    assert settings.send_timeout_s == 4
    assert settings.access_log is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BACKEND_AI_HEARTBEAT_S", "soon"),
        ("BACKEND_AI_HEARTBEAT_S", "-1"),
        ("BACKEND_AI_MAX_TEXT_CHARS", "0"),
        ("BACKEND_AI_MAX_TEXT_CHARS", "1.5"),
        ("BACKEND_AI_SIM_DEFAULTS", "[1]"),
        ("BACKEND_AI_SIM_DEFAULTS", "{"),
        ("BACKEND_AI_UPSTREAM_SIMULATOR", "maybe"),
        ("BACKEND_AI_HTTP_MAX_CONNECTIONS", "many"),
        ("BACKEND_AI_QUEUE_SIZE", "0"),
        ("BACKEND_AI_COMPARE_MODELS", "a,a"),
        ("BACKEND_AI_MAX_CONTENT_LENGTH", "10"),
        ("OPENAI_BASE_URL", "ftp://example.com"),
        ("BACKEND_AI_HISTORY_MAX_ROWS", "-5"),
        ("BACKEND_AI_HISTORY_MAX_AGE_DAYS", "-1"),
        ("BACKEND_AI_SEND_TIMEOUT_S", "later"),
    ],
)
def test_bad_values_fail_with_the_variable_and_the_value_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    assert name in str(info.value)
    assert repr(value) in str(info.value)


def test_the_error_docs_quote_is_the_real_one() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "SERVICE.md").read_text()
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"BACKEND_AI_QUEUE_SIZE": "0"})
    assert f"for example `{info.value}`" in doc.replace("\n", " ")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPENAI_API_KEY", "sk-canary\u2026x"),
        ("BACKEND_AI_AUTH_TOKEN", "tok\tcanary"),
        ("BACKEND_AI_REDIS_URL", "http://user:canary@redis.internal"),
    ],
)
def test_a_bad_secret_is_named_but_never_echoed(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    assert name in str(info.value)
    assert "canary" not in str(info.value)


def test_secrets_are_not_in_repr() -> None:
    settings = Settings(openai_api_key="sk-secret-1", auth_token="tok-secret-2")
    assert "sk-secret-1" not in repr(settings)
    assert "tok-secret-2" not in repr(settings)


def test_create_app_needs_a_key_or_a_base_url() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        create_app(Settings(history_db_path=None))


def test_a_base_url_alone_is_enough_for_local_servers() -> None:
    app = create_app(Settings(openai_base_url="http://127.0.0.1:9/v1", history_db_path=None))
    try:
        assert get_state(app).client.api_key  # a placeholder, never sent to OpenAI itself
    finally:
        get_state(app).close()


def test_create_app_mapping_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("BACKEND_AI_MAX_TEXT_CHARS", "50")
    monkeypatch.setenv("BACKEND_AI_HISTORY_DB", "off")
    app = create_app({"max_text_chars": 10})
    try:
        settings = get_state(app).settings
        assert settings.max_text_chars == 10
        assert settings.openai_api_key == "sk-env"
        assert app.config["MAX_CONTENT_LENGTH"] == settings.max_content_length
    finally:
        get_state(app).close()


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown settings: max_text"):
        Settings().with_overrides({"max_text": 10})


def test_a_nested_override_changes_only_the_fields_it_names() -> None:
    base = Settings.from_env({"BACKEND_AI_DEADLINE_S": "40", "BACKEND_AI_HTTP_TIMEOUT": "9"})
    changed = base.with_overrides({"run": {"heartbeat_s": 5}, "http": {"max_connections": 30}})
    assert changed.run == RunOptions(deadline_s=40, heartbeat_s=5)
    assert changed.http == PoolSettings(timeout_s=9, max_connections=30)
    whole = base.with_overrides({"run": RunOptions(queue_size=8)})
    assert whole.run == RunOptions(queue_size=8)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"heartbeat_s": 5}, "unknown settings: heartbeat_s (it is run.heartbeat_s)"),
        ({"timeout_s": 5}, "unknown settings: timeout_s (it is http.timeout_s)"),
        ({"rpm": 5}, "unknown settings: rpm (it is budget.rpm)"),
        ({"budget_window_s": 5}, "unknown settings: budget_window_s (it is budget.window_s)"),
        ({"budget": {"redis_url": "http://x"}}, "redis_url must start with redis://"),
        ({"run": {"heartbeat": 5}}, "unknown run settings: heartbeat"),
        ({"run": {"queue_size": 0}}, "queue_size must be at least 1, got 0"),
        ({"http": 20}, "http must be a PoolSettings"),
    ],
)
def test_a_bad_override_says_what_is_wrong(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings().with_overrides(overrides)
    assert message in str(info.value)


def test_closing_the_state_twice_is_safe() -> None:
    app = create_app(Settings(openai_api_key="k", history_db_path=None))
    state = get_state(app)
    state.close()
    state.close()
    assert state.closed
    assert state.executor.closed
