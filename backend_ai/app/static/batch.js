// The batch tab of the live page: one instruction over many items (one per line), POSTed to
// /batch/stream; a progress bar follows the "progress" events and a table fills as each
// "item" event lands. It adds itself with the page's window.backendAI.addTab, so the page's
// own markup only has to include this script and its stylesheet.
// Server text only ever goes into textContent, never into HTML.
"use strict";

(function () {
  const page = window.backendAI;
  if (!page) return;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- the tab: the page's addTab makes the button (#tab-batch) and shows/hides the panel ---
  const view = el("section", { id: "batch", class: "batch" });
  view.innerHTML = `
    <form id="batch-form" autocomplete="off">
      <label for="batch-instruction">Instruction (applied to every item)</label>
      <input id="batch-instruction" type="text" spellcheck="false"
        placeholder="Give a one-line summary of">
      <label for="batch-items">Items, one per line</label>
      <textarea id="batch-items" rows="6" spellcheck="false"
        placeholder="the first thing&#10;the second thing"></textarea>
      <div class="row">
        <label for="batch-mode">Order</label>
        <select id="batch-mode">
          <option value="as_completed">as completed — each item the moment it ends</option>
          <option value="ordered">ordered — input order</option>
        </select>
      </div>
      <div class="actions">
        <button type="submit" id="batch-start">Run batch</button>
        <button type="button" id="batch-stop" disabled>Stop</button>
        <span id="batch-status" role="status" data-state="idle">Ready.</span>
      </div>
    </form>
    <div class="batch-progress">
      <progress id="batch-bar" max="1" value="0"></progress>
      <span id="batch-counts">0 / 0</span>
    </div>
    <table id="batch-table">
      <thead><tr><th>#</th><th>id</th><th>status</th><th>text</th><th>duration</th></tr></thead>
      <tbody></tbody>
    </table>`;
  page.addTab("batch", "Batch", view);

  function $(id) {
    return document.getElementById(id);
  }

  // -- the run ---------------------------------------------------------------------------
  let controller = null;

  function setStatus(text, runState) {
    $("batch-status").textContent = text;
    $("batch-status").dataset.state = runState;
  }

  function fmtMs(ms) {
    return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
  }

  function addRow(event) {
    const row = el("tr", { "data-status": event.error ? "error" : "done" });
    row.append(
      el("td", {}, String(event.index)),
      el("td", {}, event.id),
      el("td", {}, event.error ? event.error.code : event.finish_reason || "done"),
      el("td", { class: "batch-text" }, event.error ? event.error.message : event.text),
      el("td", {}, fmtMs(event.duration_ms))
    );
    $("batch-table").tBodies[0].append(row);
  }

  function onProgress(event) {
    const total = event.total || 0;
    const finished = event.done + event.failed;
    $("batch-bar").max = Math.max(total, 1);
    $("batch-bar").value = finished;
    $("batch-counts").textContent =
      `${finished} / ${total} — ${event.done} done, ${event.failed} failed, ` +
      `${event.in_flight} in flight, ${event.items_per_s.toFixed(1)} items/s, ` +
      `${event.tokens} tokens`;
  }

  function handle(event) {
    switch (event.type) {
      case "batch_start":
        $("batch-table").tBodies[0].replaceChildren();
        onProgress({
          done: 0,
          failed: 0,
          in_flight: 0,
          total: event.total,
          items_per_s: 0,
          tokens: 0,
        });
        setStatus(`Running ${event.total} item(s)…`, "streaming");
        break;
      case "item":
        addRow(event);
        // The bar moves with every row; progress events add the rates and counts.
        $("batch-bar").value = $("batch-table").tBodies[0].rows.length;
        break;
      case "progress":
        onProgress(event);
        break;
      case "done":
        setStatus(
          `Done in ${fmtMs(event.duration_ms)}: ${event.done} done, ${event.failed} failed.`,
          "done"
        );
        break;
      default:
        break; // unknown event types are ignored
    }
  }

  async function start(ev) {
    ev.preventDefault();
    if (controller) return;
    const items = $("batch-items")
      .value.split("\n")
      .map((line) => line.trim())
      .filter((line) => line);
    const body = {
      instruction: $("batch-instruction").value,
      items,
      mode: $("batch-mode").value,
    };
    const headers = {
      "Content-Type": "application/json",
      Accept: "text/event-stream",
      ...page.authHeaders(),
    };
    controller = new AbortController();
    $("batch-start").disabled = true;
    $("batch-stop").disabled = false;
    setStatus("Starting…", "starting");
    try {
      const response = await fetch("/batch/stream", {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        signal: controller.signal,
        cache: "no-store",
      });
      if (!response.ok) {
        let message = `HTTP ${response.status}`;
        try {
          const error = (await response.json()).error;
          message = `${response.status} ${error.code}: ${error.message}`;
        } catch (err) {
          // keep the status line
        }
        setStatus(message, "error");
        return;
      }
      await page.readEvents(response, handle);
    } catch (err) {
      if (err.name === "AbortError") setStatus("Stopped.", "stopped");
      else setStatus("The connection failed.", "error");
    } finally {
      controller = null;
      $("batch-start").disabled = false;
      $("batch-stop").disabled = true;
    }
  }

  $("batch-form").addEventListener("submit", start);
  $("batch-stop").addEventListener("click", () => controller && controller.abort());
})();
