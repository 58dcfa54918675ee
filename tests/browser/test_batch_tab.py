"""The batch tab of the live page in a real headless chromium: the progress bar moves and the
table fills row by row while the batch runs, not all at once at the end."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

# Evaluated in the page: rows in the table and the progress bar's position.
BATCH_STATE = """() => ({
  rows: document.querySelectorAll('#batch-table tbody tr').length,
  value: document.getElementById('batch-bar').value,
  max: document.getElementById('batch-bar').max,
  status: document.getElementById('batch-status').dataset.state,
})"""


def test_the_batch_tab_fills_its_table_as_items_land(page: Page) -> None:
    page.click("#tab-batch")
    expect(page.locator("#batch")).to_be_visible()
    expect(page.locator("#form")).to_be_hidden()
    page.fill("#batch-instruction", "Give a one-line summary of")
    page.fill("#batch-items", "\n".join(f"item number {n}" for n in range(12)))
    page.click("#batch-start")
    # Some rows have landed while the batch is still running (the slow profile: ~2.7 s each,
    # eight at a time, so twelve items take two waves).
    page.wait_for_function(
        f"(() => {{ const s = ({BATCH_STATE})(); "
        "return s.rows >= 1 && s.rows < 12 && s.status === 'streaming'; })",
        timeout=20_000,
    )
    mid = page.evaluate(BATCH_STATE)
    assert 0 < mid["value"] < 12
    assert mid["max"] == 12
    page.wait_for_function(
        f"(() => ({BATCH_STATE})().status === 'done')",
        timeout=30_000,
    )
    done = page.evaluate(BATCH_STATE)
    assert done["rows"] == 12
    assert done["value"] == 12
    texts = page.locator("#batch-table tbody td.batch-text").all_text_contents()
    assert all(text.strip() for text in texts)
    expect(page.locator("#batch-status")).to_contain_text("12 done, 0 failed")
    # Back to the readings: the page's own form is there again.
    page.click("#tab-readings")
    expect(page.locator("#form")).to_be_visible()
    expect(page.locator("#batch")).to_be_hidden()


def test_a_refused_batch_shows_the_servers_message(page: Page) -> None:
    page.click("#tab-batch")
    page.fill("#batch-instruction", "Summarise")
    page.fill("#batch-items", "x" * 5000)
    page.click("#batch-start")
    expect(page.locator("#batch-status")).to_contain_text("422 item_too_long")
    expect(page.locator("#batch-status")).to_have_attribute("data-state", "error")
