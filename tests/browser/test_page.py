"""The live page in a real headless chromium: panels fill side by side, errors show, stop
cancels the upstream streams."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from backend_ai.simulator import SimulatorProcess

pytestmark = pytest.mark.browser

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"

# Evaluated in the page: how many panels have text, and whether any has finished.
PANEL_STATE = """() => {
  const panels = [...document.querySelectorAll('#panels .panel')];
  return {
    count: panels.length,
    withText: panels.filter(p => p.querySelector('.panel-text').textContent.length > 0).length,
    finished: panels.filter(p => !['waiting', 'streaming'].includes(p.dataset.status)).length,
    minChars: Math.min(...panels.map(p => p.querySelector('.panel-text').textContent.length)),
  };
}"""


def choose(page: Page, kind: str, text: str) -> None:
    page.check(f'input[name="kind"][value="{kind}"]')
    page.fill("#text", text)


def set_sim(page: Page, controls: dict[str, object]) -> None:
    page.click("#sim-row summary")
    page.fill("#sim", json.dumps(controls))


def test_panels_fill_side_by_side_before_any_finishes(page: Page, tmp_path: Path) -> None:
    choose(page, "dream", "I was in a lighthouse and the light was a giant eye.")
    page.click("#start")
    # Several panels have text while none has finished: the sections stream in parallel.
    page.wait_for_function(
        f"(() => {{ const s = ({PANEL_STATE})(); "
        "return s.count === 3 && s.withText >= 2 && s.finished === 0; })",
        timeout=15_000,
    )
    page.wait_for_function(
        f"(() => {{ const s = ({PANEL_STATE})(); return s.minChars >= 120 || s.finished > 0; }})",
        timeout=15_000,
    )
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("BACKEND_AI_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)

    expect(page.locator("#run-status")).to_have_attribute("data-state", "done", timeout=20_000)
    panels = page.locator("#panels .panel")
    expect(panels).to_have_count(3)
    for i in range(3):
        panel = panels.nth(i)
        expect(panel).to_have_attribute("data-status", "done")
        expect(panel.locator(".panel-ttft")).not_to_have_text("–")
        expect(panel.locator(".panel-duration")).not_to_have_text("–")
        assert panel.locator(".panel-text").text_content()
    names = [panels.nth(i).get_attribute("data-section") for i in range(3)]
    assert names == ["summary", "symbols", "recommendations"]
    expect(page.locator("#run-status")).to_contain_text("3 completed")


def test_compare_panels_show_section_errors(page: Page) -> None:
    choose(page, "compare", "Name three rivers.")
    page.fill("#models", "gpt-4o, gpt-4o-mini, gpt-4.1-mini")
    set_sim(page, {"error_after": 4, "itl_ms": 5})
    page.click("#start")
    expect(page.locator("#run-status")).to_have_attribute("data-state", "done", timeout=20_000)
    panels = page.locator("#panels .panel")
    expect(panels).to_have_count(3)
    for i in range(3):
        panel = panels.nth(i)
        expect(panel).to_have_attribute("data-status", "error")
        expect(panel.locator(".panel-error")).to_be_visible()
        expect(panel.locator(".panel-error")).to_contain_text("upstream_error")
        assert panel.locator(".panel-text").text_content()  # text before the error stays
    expect(page.locator("#run-status")).to_contain_text("3 failed")


def test_refused_request_shows_the_error_message(page: Page) -> None:
    choose(page, "compare", "Name three rivers.")
    page.fill("#models", "gpt-4o, gpt-4o")
    page.click("#start")
    expect(page.locator("#banner")).to_be_visible()
    expect(page.locator("#banner")).to_contain_text("duplicate_model")
    expect(page.locator("#run-status")).to_have_attribute("data-state", "refused")
    expect(page.locator("#panels .panel")).to_have_count(0)


def test_stop_cancels_every_upstream_stream(page: Page, simulator: SimulatorProcess) -> None:
    choose(page, "iching", "Should I change jobs?")
    set_sim(page, {"tokens": 2000, "itl_ms": 20})
    page.click("#start")
    page.wait_for_function(
        f"(() => {{ const s = ({PANEL_STATE})(); return s.count === 3 && s.withText === 3; }})",
        timeout=15_000,
    )
    page.click("#stop")
    expect(page.locator("#run-status")).to_have_attribute("data-state", "stopped")
    panels = page.locator("#panels .panel")
    for i in range(3):
        expect(panels.nth(i)).to_have_attribute("data-status", "stopped")
    stats = simulator.wait_for_stats(
        lambda s: len(s["disconnects"]) >= 3 and s["streams_active"] == 0, timeout=10.0
    )
    assert stats["streams_completed"] == 0
    assert stats["streams_started"] == 3
    expect(page.locator("#start")).to_be_enabled()
