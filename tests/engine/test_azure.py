"""An ``openai.AzureOpenAI`` client as the engine's client, against the simulator serving Azure
OpenAI's URL shape: ``/openai/deployments/{deployment}/chat/completions?api-version=...`` with
the key in the ``api-key`` header. The SDK's Azure client rewrites the engine's generic
``/chat/completions`` request into that shape, so nothing in the engine is Azure-specific.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from backend_ai.simulator import SimulatorProcess
from backend_ai.streaming import ParallelStreamManager, StreamConfig, build_http_client
from backend_ai.streaming.events import ContentChunk, SectionDone
from backend_ai.streaming.executor import SectionExecutor
from backend_ai.streaming.stats import StreamStats

from .conftest import H2
from .helpers import API_KEY, collect, ends, plain, texts

API_VERSION = "2024-10-21"


@pytest.fixture
def azure(simulator: SimulatorProcess) -> Iterator[openai.AzureOpenAI]:
    http_client = build_http_client(H2)
    client = openai.AzureOpenAI(
        api_key=API_KEY,
        azure_endpoint=simulator.origin,
        api_version=API_VERSION,
        http_client=http_client,  # type: ignore[arg-type]
        max_retries=0,
    )
    yield client
    client.close()
    http_client.close()


def deployment(name: str, **sim: object) -> StreamConfig:
    """A section whose ``model`` names the Azure deployment, as Azure's SDK expects."""
    return StreamConfig(name, f"Write the {name}.", model=f"deploy-{name}", extra_body={"sim": sim})


def test_azure_client_streams_parallel_sections_over_one_connection(
    azure: openai.AzureOpenAI, executor: SectionExecutor, simulator: SimulatorProcess
) -> None:
    manager = ParallelStreamManager(azure, executor=executor, stats=StreamStats())
    try:
        events = plain(collect(manager.stream([deployment(n) for n in ("a", "b", "c")])))
    finally:
        manager.close()
    done = ends(events)
    assert all(isinstance(e, SectionDone) for e in done.values()), done
    assert all(texts(events).values())
    stats = simulator.stats()
    paths = sorted(r["path"] for r in stats["requests"])
    assert paths == [f"/openai/deployments/deploy-{n}/chat/completions" for n in "abc"]
    assert stats["connections_accepted"] == 1
    assert stats["connections"][0]["http_version"] == "2"


def test_closing_an_azure_run_closes_its_upstream_streams(
    azure: openai.AzureOpenAI, executor: SectionExecutor, simulator: SimulatorProcess
) -> None:
    manager = ParallelStreamManager(azure, executor=executor, stats=StreamStats())
    slow = {"ttft_ms": 10, "itl_ms": 10, "tokens": 2000}
    events = manager.stream([deployment(n, **slow) for n in ("a", "b")])
    seen: set[str] = set()
    for event in events:
        if isinstance(event, ContentChunk):
            seen.add(event.section)
            if len(seen) == 2:
                break
    events.close()
    manager.close()
    stats = simulator.wait_for_stats(
        lambda s: len(s["disconnects"]) >= 2 and s["streams_active"] == 0, timeout=10.0
    )
    assert stats["streams_completed"] == 0
