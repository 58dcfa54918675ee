"""The service's rate budget from its settings: none by default, shared through Redis when
``BACKEND_AI_REDIS_URL`` is set, and a Redis that is not there never fails a request."""

from __future__ import annotations

import logging

import httpx
import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from backend_ai.app.metrics import ServiceMetrics
from backend_ai.app.rate_budget import build_rate_budget
from backend_ai.app.redis_process import RedisProcess
from backend_ai.app.settings import BudgetSettings, Settings
from backend_ai.errors import ConfigError
from backend_ai.simulator import SimulatorProcess
from backend_ai.streaming import PoolSettings
from backend_ai.streaming.budget import LocalRateBudget
from backend_ai.streaming.redis_budget import RedisRateBudget
from tests.support.protocol import check_protocol
from tests.support.sse import parse_frames

from .conftest import MakeApp

BODY = {"dream": "a dream", "sim": {"ttft_ms": 5, "itl_ms": 1, "tokens": 3, "jitter": 0}}


def test_budget_settings_are_read_and_the_redis_url_stays_out_of_repr() -> None:
    settings = Settings.from_env(
        {
            "BACKEND_AI_RPM": "60",
            "BACKEND_AI_TPM": "90000",
            "BACKEND_AI_BUDGET_WINDOW_S": "10",
            "BACKEND_AI_BUDGET_MARGIN_S": "0.5",
            "BACKEND_AI_REDIS_URL": "redis://:hunter2@redis.internal:6379/0",
            "BACKEND_AI_REDIS_TIMEOUT_S": "0.1",
        }
    )
    assert settings.budget == BudgetSettings(
        rpm=60,
        tpm=90000,
        window_s=10.0,
        margin_s=0.5,
        redis_url="redis://:hunter2@redis.internal:6379/0",
        redis_timeout_s=0.1,
    )
    assert Settings.from_env({"BACKEND_AI_BUDGET_MARGIN_S": "0"}).budget.margin_s == 0
    assert "hunter2" not in repr(settings)
    assert not Settings.from_env({}).budget.enabled


@pytest.mark.parametrize(
    ("name", "value"),
    [("BACKEND_AI_RPM", "0"), ("BACKEND_AI_TPM", "x"), ("BACKEND_AI_BUDGET_WINDOW_S", "-1"),
     ("BACKEND_AI_BUDGET_MARGIN_S", "-0.5"), ("BACKEND_AI_BUDGET_MARGIN_S", "nan"),
     ("BACKEND_AI_REDIS_URL", "http://:hunter2@redis"), ("BACKEND_AI_REDIS_TIMEOUT_S", "0")],
)  # fmt: skip
def test_bad_budget_settings_fail_at_start_without_echoing_secrets(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    assert "hunter2" not in str(info.value)


def test_no_budget_settings_no_budget_and_limits_alone_a_local_one() -> None:
    metrics = ServiceMetrics()
    with httpx.Client() as http:
        assert build_rate_budget(Settings(), metrics, http, upstream="u") is None
        assert not http.event_hooks["response"]
        budget = build_rate_budget(
            Settings(budget=BudgetSettings(rpm=5)), metrics, http, upstream="u"
        )
        assert budget is not None
        local = budget.for_model("gpt-4o")  # one window per model
        assert isinstance(local, LocalRateBudget)
        assert local is not budget.for_model("gpt-4o-mini")
        assert local.margin_s == Settings().budget.margin_s  # the setting, not a rule of its own
        assert len(http.event_hooks["response"]) == 1  # it hears every upstream answer


def _run(client: FlaskClient) -> None:
    response = client.post("/dream/interpret-stream", json=BODY)
    assert response.status_code == 200
    texts = check_protocol(parse_frames(response.get_data(as_text=True)))
    assert set(texts) == {"summary", "symbols", "recommendations"}


def _metric(client: FlaskClient, name: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


def _sim_app(make_app: MakeApp, simulator: SimulatorProcess, **settings: object) -> FlaskClient:
    app = make_app(
        openai_base_url=simulator.base_url,
        upstream_is_simulator=True,
        http=PoolSettings(http2_prior_knowledge=True),
        **settings,
    )
    return app.test_client()


def test_with_redis_the_apps_starts_are_counted_where_every_process_sees_them(
    make_app: MakeApp, simulator: SimulatorProcess, redis_server: RedisProcess
) -> None:
    client = _sim_app(
        make_app, simulator, budget=BudgetSettings(rpm=100, redis_url=redis_server.url)
    )
    _run(client)
    # Another process's view of the same upstream: each section is in its model's shared
    # window (the dream page asks gpt-4o for one section and gpt-4o-mini for two).
    in_window = {}
    for model in ("gpt-4o", "gpt-4o-mini", "*"):
        other = RedisRateBudget(redis_server.url, upstream=simulator.base_url + "/", model=model)
        try:
            snapshot = other.snapshot()
        finally:
            other.close()
        assert snapshot["store"] == "redis"
        in_window[model] = snapshot["requests_in_window"]
    assert in_window == {"gpt-4o": 1, "gpt-4o-mini": 2, "*": 0}
    assert _metric(client, "backend_ai_budget_redis_fallbacks_total") == 0


def test_without_its_redis_the_app_streams_on_and_says_so_once(
    make_app: MakeApp,
    simulator: SimulatorProcess,
    redis_server: RedisProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = _sim_app(
        make_app, simulator, budget=BudgetSettings(rpm=100, redis_url=redis_server.url)
    )
    redis_server.kill()
    with caplog.at_level(logging.WARNING, logger="backend_ai"):
        _run(client)
        _run(client)
    said = [r for r in caplog.records if "Redis is unavailable" in r.getMessage()]
    assert len(said) == 1
    assert redis_server.url not in caplog.text
    assert _metric(client, "backend_ai_budget_redis_fallbacks_total") == 1
    assert _metric(client, "backend_ai_budget_redis_down") == 1
    assert simulator.stats(records=False)["requests_total"] == 6
