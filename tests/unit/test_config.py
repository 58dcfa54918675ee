"""StreamConfig, RunOptions and the presets: every validation rule, with the message it gives."""

from __future__ import annotations

import math

import pytest

from backend_ai.errors import ConfigError
from backend_ai.streaming import RunOptions, StreamConfig, optimize_stream_config
from backend_ai.streaming.config import MAX_SECTIONS, PRESETS, Mode, validate_configs


def test_defaults_of_a_section():
    config = StreamConfig("summary", "Interpret my dream.")
    assert (config.model, config.temperature, config.max_tokens) == ("gpt-4o", 0.7, 500)
    assert config.system_prompt is None
    assert config.messages() == [{"role": "user", "content": "Interpret my dream."}]


def test_system_prompt_comes_first_in_the_messages():
    config = StreamConfig("s", "question", system_prompt="You read dreams.")
    assert config.messages() == [
        {"role": "system", "content": "You read dreams."},
        {"role": "user", "content": "question"},
    ]


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError, match="section_name"):
        StreamConfig("", "p")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"section_name": ""}, "section_name must be a non-empty string"),
        ({"section_name": "   "}, "section_name must be a non-empty string"),
        ({"section_name": 3}, "section_name must be a non-empty string"),
        ({"prompt": ""}, "section 's': prompt must be a non-empty string"),
        ({"prompt": " \n\t"}, "section 's': prompt must be a non-empty string"),
        ({"prompt": None}, "section 's': prompt must be a non-empty string"),
        ({"model": ""}, "section 's': model must be a non-empty string"),
        ({"temperature": -0.01}, "section 's': temperature -0.01 is outside 0-2"),
        ({"temperature": 2.01}, "section 's': temperature 2.01 is outside 0-2"),
        ({"temperature": math.nan}, "section 's': temperature nan is outside 0-2"),
        ({"temperature": "0.5"}, "section 's': temperature must be a number"),
        ({"temperature": True}, "section 's': temperature must be a number"),
        ({"max_tokens": 0}, "section 's': max_tokens must be at least 1, got 0"),
        ({"max_tokens": -5}, "section 's': max_tokens must be at least 1, got -5"),
        ({"max_tokens": 1.5}, "section 's': max_tokens must be an integer"),
        ({"max_tokens": True}, "section 's': max_tokens must be an integer"),
        ({"system_prompt": 42}, "section 's': system_prompt must be a string"),
    ],
)
def test_stream_config_rejects(kwargs, message):
    arguments = {"section_name": "s", "prompt": "p", **kwargs}
    with pytest.raises(ConfigError) as info:
        StreamConfig(**arguments)
    assert str(info.value) == message


@pytest.mark.parametrize("temperature", [0, 0.0, 1, 2, 2.0])
def test_temperature_bounds_are_inclusive(temperature):
    assert StreamConfig("s", "p", temperature=temperature).temperature == temperature


def test_max_tokens_of_one_is_allowed():
    assert StreamConfig("s", "p", max_tokens=1).max_tokens == 1


def test_validate_configs_rejects_duplicate_names():
    configs = [StreamConfig("a", "p"), StreamConfig("b", "p"), StreamConfig("a", "q")]
    with pytest.raises(ConfigError) as info:
        validate_configs(configs)
    assert str(info.value) == "duplicate section name 'a' in one run"


def test_validate_configs_rejects_an_empty_run():
    with pytest.raises(ConfigError) as info:
        validate_configs([])
    assert str(info.value) == "a run needs at least one StreamConfig"


def test_validate_configs_rejects_too_many_sections():
    configs = [StreamConfig(f"s{i}", "p") for i in range(MAX_SECTIONS + 1)]
    with pytest.raises(ConfigError) as info:
        validate_configs(configs)
    assert str(info.value) == f"a run takes at most {MAX_SECTIONS} sections, got {MAX_SECTIONS + 1}"
    assert len(validate_configs(configs[:MAX_SECTIONS])) == MAX_SECTIONS


def test_validate_configs_rejects_other_types():
    with pytest.raises(ConfigError) as info:
        validate_configs([{"section_name": "a", "prompt": "p"}])  # type: ignore[list-item]
    assert str(info.value) == "expected StreamConfig, got dict"


def test_validate_configs_accepts_any_iterable_and_keeps_order():
    configs = (StreamConfig(name, "p") for name in ("c", "a", "b"))
    assert [c.section_name for c in validate_configs(configs)] == ["c", "a", "b"]


# -- RunOptions ---------------------------------------------------------------------------


def test_run_options_defaults():
    options = RunOptions()
    assert options.mode is Mode.INTERLEAVED
    assert options.max_parallel is None
    assert options.queue_size >= 1
    assert options.include_usage is True


@pytest.mark.parametrize("mode", ["interleaved", "ordered", "as_completed"])
def test_run_options_mode_accepts_strings(mode):
    assert RunOptions(mode=mode).mode is Mode(mode)


def test_run_options_is_keyword_only():
    with pytest.raises(TypeError):
        RunOptions("ordered")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"mode": "sequential"},
            "mode must be one of interleaved, ordered, as_completed, got 'sequential'",
        ),
        ({"max_parallel": 0}, "max_parallel must be a positive integer or None, got 0"),
        ({"max_parallel": 2.5}, "max_parallel must be a positive integer or None, got 2.5"),
        ({"max_parallel": True}, "max_parallel must be a positive integer or None, got True"),
        ({"deadline_s": 0}, "deadline_s must be a positive number or None, got 0"),
        ({"deadline_s": -1.0}, "deadline_s must be a positive number or None, got -1.0"),
        ({"deadline_s": "5"}, "deadline_s must be a positive number or None, got '5'"),
        ({"stall_timeout_s": 0}, "stall_timeout_s must be a positive number or None, got 0"),
        ({"heartbeat_s": -2}, "heartbeat_s must be a positive number or None, got -2"),
        (
            {"backpressure_timeout_s": None},
            "backpressure_timeout_s must be a positive number, got None",
        ),
        ({"backpressure_timeout_s": 0}, "backpressure_timeout_s must be a positive number, got 0"),
        ({"max_retry_wait_s": 0}, "max_retry_wait_s must be a positive number, got 0"),
        ({"max_retry_wait_s": True}, "max_retry_wait_s must be a positive number, got True"),
        ({"queue_size": 0}, "queue_size must be at least 1, got 0"),
        ({"queue_size": 1.0}, "queue_size must be an integer, got 1.0"),
        ({"queue_size": False}, "queue_size must be an integer, got False"),
        (
            {"max_rate_limit_retries": -1},
            "max_rate_limit_retries must be a non-negative integer, got -1",
        ),
        (
            {"max_rate_limit_retries": 1.5},
            "max_rate_limit_retries must be a non-negative integer, got 1.5",
        ),
    ],
)
def test_run_options_rejects(kwargs, message):
    with pytest.raises(ConfigError) as info:
        RunOptions(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("name", ["deadline_s", "stall_timeout_s", "heartbeat_s"])
def test_optional_timers_can_be_switched_off(name):
    assert getattr(RunOptions(**{name: None}), name) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"deadline_s": math.nan},
        {"stall_timeout_s": math.nan},
        {"backpressure_timeout_s": math.nan},
        {"max_retry_wait_s": math.nan},
        {"max_rate_limit_retries": True},
    ],
    ids=["deadline-nan", "stall-nan", "backpressure-nan", "retry-wait-nan", "retries-bool"],
)
def test_run_options_rejects_nan_and_bool_counts(kwargs):
    """NaN silently disables a timer and True is not a count."""
    with pytest.raises(ConfigError):
        RunOptions(**kwargs)


# -- presets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("complexity", "model", "temperature", "max_tokens"),
    [
        ("simple", "gpt-4o-mini", 0.5, 300),
        ("medium", "gpt-4o", 0.7, 500),
        ("complex", "gpt-4o", 0.8, 800),
    ],
)
def test_presets(complexity, model, temperature, max_tokens, monkeypatch):
    for name in ("SIMPLE", "MEDIUM", "COMPLEX"):
        monkeypatch.delenv(f"BACKEND_AI_MODEL_{name}", raising=False)
    config = optimize_stream_config("sec", "prompt", complexity)
    assert config == StreamConfig(
        "sec", "prompt", model=model, temperature=temperature, max_tokens=max_tokens
    )
    assert PRESETS[complexity].model == model


def test_preset_default_is_medium(monkeypatch):
    monkeypatch.delenv("BACKEND_AI_MODEL_MEDIUM", raising=False)
    assert optimize_stream_config("s", "p").max_tokens == 500


def test_preset_keeps_the_system_prompt():
    config = optimize_stream_config("s", "p", "simple", system_prompt="Be brief.")
    assert config.system_prompt == "Be brief."


@pytest.mark.parametrize("complexity", ["simple", "medium", "complex"])
def test_preset_model_overridable_by_environment(complexity, monkeypatch):
    monkeypatch.setenv(f"BACKEND_AI_MODEL_{complexity.upper()}", "my-model")
    config = optimize_stream_config("s", "p", complexity)
    assert config.model == "my-model"
    # Only the model changes; the rest of the preset stays.
    assert config.temperature == PRESETS[complexity].temperature
    assert config.max_tokens == PRESETS[complexity].max_tokens


def test_preset_override_only_touches_its_own_preset(monkeypatch):
    monkeypatch.setenv("BACKEND_AI_MODEL_SIMPLE", "tiny")
    monkeypatch.delenv("BACKEND_AI_MODEL_COMPLEX", raising=False)
    assert optimize_stream_config("s", "p", "simple").model == "tiny"
    assert optimize_stream_config("s", "p", "complex").model == "gpt-4o"


def test_preset_blank_override_is_ignored(monkeypatch):
    monkeypatch.setenv("BACKEND_AI_MODEL_SIMPLE", "  ")
    assert optimize_stream_config("s", "p", "simple").model == "gpt-4o-mini"


def test_preset_environ_argument_wins_over_os_environ(monkeypatch):
    monkeypatch.setenv("BACKEND_AI_MODEL_COMPLEX", "from-os")
    config = optimize_stream_config(
        "s", "p", "complex", environ={"BACKEND_AI_MODEL_COMPLEX": "from-arg"}
    )
    assert config.model == "from-arg"
    assert optimize_stream_config("s", "p", "complex", environ={}).model == "gpt-4o"


def test_preset_unknown_complexity():
    with pytest.raises(ConfigError) as info:
        optimize_stream_config("s", "p", "extreme")
    assert str(info.value) == "complexity must be one of simple, medium, complex, got 'extreme'"


def test_preset_still_validates_the_section():
    with pytest.raises(ConfigError, match="prompt must be a non-empty string"):
        optimize_stream_config("s", "", "simple")
