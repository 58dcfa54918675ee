"""Clients for the simulator tests: the real ``openai`` SDK, no retries unless a test asks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from backend_ai.simulator import SimulatorProcess

API_KEY = "sk-simulator-test"
MESSAGES = [{"role": "user", "content": "Interpret a dream about a lighthouse."}]


@pytest.fixture
def client(simulator: SimulatorProcess) -> Iterator[openai.OpenAI]:
    """SDK client on its default transport (HTTP/1.1)."""
    with openai.OpenAI(base_url=simulator.base_url, api_key=API_KEY, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def h2_http_client() -> Iterator[httpx.Client]:
    """An HTTP/2-only (prior knowledge) pooled client, the way the engine talks upstream."""
    with httpx.Client(http1=False, http2=True, timeout=30.0) as http_client:
        yield http_client


@pytest.fixture
def h2_client(simulator: SimulatorProcess, h2_http_client: httpx.Client) -> Iterator[openai.OpenAI]:
    """SDK client over one HTTP/2 connection."""
    with openai.OpenAI(
        base_url=simulator.base_url,
        api_key=API_KEY,
        max_retries=0,
        http_client=h2_http_client,  # type: ignore[arg-type]
    ) as sdk:
        yield sdk
