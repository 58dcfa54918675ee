"""Fixtures for the page tests: an installed chromium driven by Playwright, the app under gunicorn.

Playwright's own browser download does not work here, so the tests launch an installed
chromium, found as ``tests/browser/chromium.py`` describes (``.ci/run`` installs Debian's);
without one they are skipped, or fail under ``CI=true``. The server runs on the session's
simulator with a slow default profile (sent as the ``X-Sim`` header by the app, see
``BACKEND_AI_SIM_DEFAULTS``) so that a person — and a test — can watch the panels fill.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from backend_ai.app.gunicorn_process import GunicornProcess
from backend_ai.simulator import SimulatorProcess

from .chromium import find_chromium, missing_reason

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: ~0.3 s to the first token, then 40 ms per token: about 2.7 s per section.
SLOW_PROFILE = {"ttft_ms": 300, "itl_ms": 40, "tokens": 60, "jitter": 0}


# Package scope, not session: while Playwright's sync API is open it keeps an asyncio event
# loop running in the main thread, so any later test calling ``asyncio.run`` there would fail.
# The browser (and the page's server) close when this package's tests are done.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(missing_reason())
        pytest.skip(missing_reason())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="package")
def page_server(
    simulator_server: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BACKEND_AI_"))}
    env.update(
        OPENAI_API_KEY="sk-browser-test",
        OPENAI_BASE_URL=simulator_server.base_url,
        BACKEND_AI_UPSTREAM_SIMULATOR="1",
        BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE="1",
        BACKEND_AI_SIM_DEFAULTS=json.dumps(SLOW_PROFILE),
        BACKEND_AI_HEARTBEAT_S="1",
        BACKEND_AI_HISTORY_DB=str(tmp_path_factory.mktemp("page") / "history.sqlite3"),
    )
    with GunicornProcess(workers=1, threads=16, env=env) as server:
        yield server


DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 360, "height": 740}

OpenPage = Callable[..., Page]


@pytest.fixture
def open_page(
    browser: Browser, page_server: GunicornProcess, simulator: SimulatorProcess
) -> Iterator[OpenPage]:
    """``open_page(viewport=DESKTOP)``: the live page, loaded, with the simulator reset; each
    fails the test on any script error.

    "Failed to load resource" lines are the browser reporting non-2xx answers, which some
    tests provoke on purpose; the page's handling of them is what those tests check.
    """
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def open_one(viewport: dict[str, int] = DESKTOP, **context_args: Any) -> Page:
        context = browser.new_context(viewport=viewport, **context_args)
        contexts.append(context)
        page = context.new_page()
        page.on(
            "console",
            lambda msg: (
                errors.append(msg.text)
                if msg.type == "error" and not msg.text.startswith("Failed to load resource")
                else None
            ),
        )
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        assert page_server.url is not None
        page.goto(page_server.url)
        page.wait_for_selector('#upstream[data-upstream="simulator"]')
        return page

    yield open_one
    for context in contexts:
        context.close()
    assert not errors, f"errors in the page: {errors}"


@pytest.fixture
def page(open_page: OpenPage) -> Page:
    """The live page at desktop size."""
    return open_page(DESKTOP)
