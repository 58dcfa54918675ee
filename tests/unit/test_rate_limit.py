"""Reading Retry-After: retry-after-ms first, then seconds, then an HTTP date; always capped."""

from __future__ import annotations

import email.utils

import pytest

from backend_ai.streaming.rate_limit import (
    DEFAULT_RETRY_WAIT_S,
    parse_retry_after,
    retry_wait_s,
)

NOW = 1_800_000_000.0


def _http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"Retry-After-Ms": "250"}, 0.25),
        ({"retry-after-ms": "0"}, 0.0),
        ({"retry-after-ms": "12.5"}, 0.0125),
        ({"retry-after": "2"}, 2.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after": "0"}, 0.0),
        # retry-after-ms wins over Retry-After, as in the OpenAI SDK
        ({"retry-after-ms": "100", "retry-after": "5"}, 0.1),
        # an unusable retry-after-ms falls back to Retry-After
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "-5", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "nan", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "inf", "retry-after": "3"}, 3.0),
        ({"retry-after": _http_date(NOW + 30)}, 30.0),
        # a date in the past means "now", never a negative wait
        ({"retry-after": _http_date(NOW - 30)}, 0.0),
    ],
)
def test_parse_retry_after(headers, seconds):
    assert parse_retry_after(headers, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"content-type": "application/json"},
        {"retry-after": "tomorrow"},
        {"retry-after": ""},
        {"retry-after": "-1"},
        {"retry-after": "nan"},
        {"retry-after": "inf"},
        {"retry-after-ms": "x"},
    ],
)
def test_parse_retry_after_unusable(headers):
    assert parse_retry_after(headers, now=NOW) is None


def test_retry_wait_uses_the_header():
    assert retry_wait_s({"retry-after-ms": "400"}, cap_s=30) == pytest.approx(0.4)


def test_retry_wait_is_capped():
    assert retry_wait_s({"retry-after": "3600"}, cap_s=2.5) == 2.5
    assert retry_wait_s({"retry-after-ms": "5000"}, cap_s=0.2) == 0.2


def test_retry_wait_default_when_no_usable_header():
    assert retry_wait_s({}, cap_s=30) == DEFAULT_RETRY_WAIT_S
    assert retry_wait_s(None, cap_s=30) == DEFAULT_RETRY_WAIT_S
    assert retry_wait_s({"retry-after": "garbage"}, cap_s=30) == DEFAULT_RETRY_WAIT_S


def test_retry_wait_default_is_capped_too():
    assert retry_wait_s(None, cap_s=0.05) == 0.05
