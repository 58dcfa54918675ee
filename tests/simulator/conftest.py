"""Clients for the simulator tests: the real ``openai`` SDK, no retries unless a test asks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import openai
import pytest

from backend_ai.simulator import SimulatorProcess
from backend_ai.streaming.http_pool import PoolSettings, build_http_client

API_KEY = "sk-simulator-test"
MESSAGES = [{"role": "user", "content": "Interpret a dream about a lighthouse."}]


@pytest.fixture
def client(simulator: SimulatorProcess) -> Iterator[openai.OpenAI]:
    """SDK client on its default transport (HTTP/1.1)."""
    with openai.OpenAI(base_url=simulator.base_url, api_key=API_KEY, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def h2_http_client() -> Iterator[httpx2.Client]:
    """The engine's own pooled client, HTTP/2 with prior knowledge: the way it talks upstream."""
    settings = PoolSettings(http2_prior_knowledge=True, timeout_s=30.0)
    with build_http_client(settings) as http_client:
        yield http_client


@pytest.fixture
def h2_client(
    simulator: SimulatorProcess, h2_http_client: httpx2.Client
) -> Iterator[openai.OpenAI]:
    """SDK client over one HTTP/2 connection."""
    with openai.OpenAI(
        base_url=simulator.base_url,
        api_key=API_KEY,
        max_retries=0,
        http_client=h2_http_client,
    ) as sdk:
        yield sdk
