"""The one environment reader: typed values, the record's defaults, errors naming the variable."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from backend_ai.errors import ConfigError
from backend_ai.streaming import environment
from backend_ai.streaming.environment import Variable


@dataclass(frozen=True, kw_only=True)
class Limits:
    low: int = 1
    high: int = 10
    wait_s: float | None = 5.0
    token: str | None = None

    def __post_init__(self) -> None:
        if self.low < 0:
            raise ConfigError(f"low must be non-negative, got {self.low}")
        if self.low > self.high:
            raise ConfigError(f"low ({self.low}) cannot exceed high ({self.high})")
        if self.token is not None and self.token.startswith("x"):
            raise ConfigError("token must not start with x")


VARIABLES = (
    Variable("T_LOW", "low", environment.integer),
    Variable("T_HIGH", "high", environment.integer),
    Variable("T_WAIT_S", "wait_s", environment.number_or_off),
    Variable("T_TOKEN", "token", secret=True),
)


def test_unset_and_blank_variables_keep_the_records_defaults():
    assert environment.read(Limits, VARIABLES, {}) == Limits()
    assert environment.read(Limits, VARIABLES, {"T_LOW": "  ", "T_WAIT_S": ""}) == Limits()


def test_set_variables_replace_their_fields_only():
    got = environment.read(Limits, VARIABLES, {"T_HIGH": " 20 ", "T_WAIT_S": "off"})
    assert got == Limits(high=20, wait_s=None)


def test_base_values_are_kept_unless_a_variable_sets_the_field():
    assert environment.read(Limits, VARIABLES, {}, high=3) == Limits(high=3)
    assert environment.read(Limits, VARIABLES, {"T_HIGH": "4"}, high=3) == Limits(high=4)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"T_LOW": "two"}, "T_LOW must be an integer, got 'two'"),
        ({"T_WAIT_S": "soon"}, "T_WAIT_S must be a number, or off, got 'soon'"),
        ({"T_WAIT_S": "nan"}, "T_WAIT_S must be a number, or off, got 'nan'"),
        # The record's own message, with the variable and the value that made it complain.
        ({"T_LOW": "-1"}, "T_LOW='-1': low must be non-negative, got -1"),
        ({"T_LOW": "11", "T_HIGH": "12"}, None),
        ({"T_LOW": "11"}, "T_LOW='11': low (11) cannot exceed high (10)"),
    ],
)
def test_errors_name_the_variable_and_its_value(environ, message):
    if message is None:
        assert environment.read(Limits, VARIABLES, environ) == Limits(low=11, high=12)
        return
    with pytest.raises(ConfigError) as info:
        environment.read(Limits, VARIABLES, environ)
    assert str(info.value) == message


def test_values_fine_alone_but_not_together_name_every_variable_set():
    with pytest.raises(ConfigError) as info:
        environment.read(Limits, VARIABLES, {"T_LOW": "8", "T_HIGH": "7"})
    assert str(info.value) == "low (8) cannot exceed high (7) (from T_LOW, T_HIGH)"


def test_a_secret_is_never_echoed():
    with pytest.raises(ConfigError) as info:
        environment.read(Limits, VARIABLES, {"T_TOKEN": "xSECRET"})
    assert str(info.value) == "T_TOKEN: token must not start with x"
    secret_number = Variable("T_PIN", "pin", environment.integer, secret=True)
    with pytest.raises(ConfigError) as info:
        environment.value(secret_number, 0, {"T_PIN": "12a4"})
    assert "12a4" not in str(info.value)
    assert "T_PIN must be an integer" in str(info.value)


def test_value_reads_one_variable_and_checks_it():
    size = Variable("T_SIZE", "size", environment.integer)

    def positive(value: int) -> None:
        if value < 1:
            raise ConfigError(f"size must be positive, got {value}")

    assert environment.value(size, 7, {}, check=positive) == 7
    assert environment.value(size, 7, {"T_SIZE": "3"}, check=positive) == 3
    with pytest.raises(ConfigError) as info:
        environment.value(size, 7, {"T_SIZE": "0"}, check=positive)
    assert str(info.value) == "T_SIZE='0': size must be positive, got 0"


def test_blank_can_mean_something_of_its_own():
    path = Variable("T_PATH", "path", environment.path_or_off, blank=None)
    assert environment.value(path, "/default", {}) == "/default"
    assert environment.value(path, "/default", {"T_PATH": " "}) is None
    assert environment.value(path, "/default", {"T_PATH": "OFF"}) is None
    assert environment.value(path, "/default", {"T_PATH": " /x "}) == "/x"


@pytest.mark.parametrize(
    ("parse", "raw", "expected"),
    [
        (environment.flag, "Yes", True),
        (environment.flag, "off", False),
        (environment.number, "1e3", 1000.0),
        (environment.integer_or_off, "none", None),
        (environment.integer_or_off, "12", 12),
        (environment.comma_list, " a, ,b ,", ("a", "b")),
        (environment.json_object, '{"a": 1}', {"a": 1}),
    ],
)
def test_parsers(parse, raw, expected):
    assert environment.value(Variable("T_X", "x", parse), "unset", {"T_X": raw}) == expected


@pytest.mark.parametrize(
    ("parse", "raw", "what"),
    [
        (environment.flag, "maybe", "a boolean"),
        (environment.number, "inf", "a finite number"),
        (environment.integer, "1.5", "an integer"),
        (environment.integer_or_off, "lots", "an integer, or off"),
        (environment.json_object, "[1]", "a JSON object"),
        (environment.json_object, "{", "a JSON object"),
    ],
)
def test_parsers_refuse_what_they_cannot_read(parse, raw, what):
    with pytest.raises(ConfigError) as info:
        environment.value(Variable("T_X", "x", parse), None, {"T_X": raw})
    assert str(info.value).startswith(f"T_X must be {what}")
