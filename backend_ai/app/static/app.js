// The live page: POSTs a reading, reads the SSE answer with fetch + a stream reader
// (EventSource cannot POST), and fills one panel per section as its chunks arrive; under the
// panels a timeline shows each section's request, first token and end, against what the same
// sections would have taken one after another. A second tab lists the last readings (/history).
// Server text only ever goes into textContent / text nodes, never into HTML.
"use strict";

(function () {
  const KINDS = {
    dream: {
      label: "Your dream",
      field: "dream",
      title: "Dream reading",
      url: () => "/dream/interpret-stream",
    },
    iching: {
      label: "Your question",
      field: "question",
      title: "I Ching reading",
      url: () => "/iching/reading-stream",
    },
    tarot: {
      label: "Your question",
      field: "question",
      title: "Tarot reading",
      url: () => `/tarot/${encodeURIComponent($("spread").value)}-stream`,
    },
    compare: {
      label: "Prompt",
      field: "prompt",
      title: "Model comparison",
      url: () => "/compare/stream",
    },
  };

  function $(id) {
    return document.getElementById(id);
  }

  // One run at a time; `run` holds everything the timeline and the export need.
  const state = { controller: null, panels: new Map(), run: null, health: null, frame: 0 };

  function kind() {
    return document.querySelector('input[name="kind"]:checked').value;
  }

  function setStatus(text, runState, outcome) {
    const el = $("run-status");
    el.textContent = text;
    el.dataset.state = runState;
    if (outcome) el.dataset.outcome = outcome;
    else delete el.dataset.outcome;
  }

  function showBanner(text) {
    const el = $("banner");
    el.textContent = text;
    el.hidden = !text;
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
  }

  function authHeaders() {
    const headers = {};
    if (!$("token-row").hidden && $("token").value) {
      headers.Authorization = `Bearer ${$("token").value}`;
    }
    return headers;
  }

  // ---- tabs -----------------------------------------------------------------------------

  function showTab(name) {
    for (const button of document.querySelectorAll("#tabs [data-tab]")) {
      button.setAttribute("aria-selected", String(button.dataset.tab === name));
    }
    for (const panel of document.querySelectorAll("main > [data-tab-panel]")) {
      panel.hidden = panel.dataset.tabPanel !== name;
    }
    document.dispatchEvent(new CustomEvent("backend-ai:tab", { detail: name }));
  }

  // A tab of another script: `section` becomes the panel of a new button, `tab-NAME`.
  function addTab(name, label, section) {
    const button = document.createElement("button");
    button.type = "button";
    button.id = `tab-${name}`;
    button.setAttribute("role", "tab");
    button.setAttribute("aria-selected", "false");
    button.dataset.tab = name;
    button.textContent = label;
    $("tabs").append(button);
    section.classList.add("tab-panel");
    section.setAttribute("role", "tabpanel");
    section.dataset.tabPanel = name;
    section.hidden = true;
    document.querySelector("main").append(section);
    return button;
  }

  // ---- the form -------------------------------------------------------------------------

  function onKindChange() {
    const k = kind();
    $("text-label").textContent = KINDS[k].label;
    for (const row of document.querySelectorAll("[data-for]")) {
      row.hidden = row.dataset.for !== k;
    }
  }

  async function loadHealth() {
    try {
      const response = await fetch("/health", { cache: "no-store" });
      const health = await response.json();
      state.health = health;
      $("upstream").textContent =
        health.upstream === "simulator" ? "upstream: simulator" : "upstream: OpenAI-compatible";
      $("upstream").dataset.upstream = health.upstream;
      $("text-max").textContent = String(health.max_text_chars);
      $("text").maxLength = health.max_text_chars;
      $("models").value = (health.compare_models || []).join(", ");
      const spread = $("spread");
      spread.replaceChildren();
      for (const name of health.tarot_spreads || []) {
        const option = document.createElement("option");
        option.value = name;
        option.textContent = name;
        if (name === "three-card") option.selected = true;
        spread.append(option);
      }
      $("token-row").hidden = !health.auth_required;
      $("sim-row").hidden = health.upstream !== "simulator";
    } catch (err) {
      showBanner("The service did not answer /health.");
    }
  }

  function buildBody() {
    const k = kind();
    const body = { [KINDS[k].field]: $("text").value, mode: $("mode").value };
    if (k === "iching" && $("hexagram").value !== "") {
      body.hexagram = Number($("hexagram").value);
    }
    if (k === "compare") {
      body.models = $("models")
        .value.split(",")
        .map((m) => m.trim())
        .filter((m) => m);
    }
    const sim = $("sim").value.trim();
    if (sim && !$("sim-row").hidden) {
      body.sim = JSON.parse(sim); // a SyntaxError is reported by start()
    }
    return body;
  }

  // ---- panels ---------------------------------------------------------------------------

  function makePanel(section) {
    const node = $("panel-template").content.firstElementChild.cloneNode(true);
    node.dataset.section = section;
    node.querySelector(".panel-name").textContent = section;
    const textNode = document.createTextNode("");
    node.querySelector(".panel-text").append(textNode);
    $("panels").append(node);
    const panel = {
      name: section,
      node,
      textNode,
      chars: 0,
      model: null,
      status: "waiting",
      startedAt: 0,
      firstAt: 0,
      endedAt: 0,
      ttftMs: null,
      durationMs: null,
      error: null,
    };
    state.panels.set(section, panel);
    return panel;
  }

  function setPanelStatus(panel, status) {
    panel.status = status;
    panel.node.dataset.status = status;
    panel.node.querySelector(".panel-status").textContent = status;
  }

  function showDrawn(event) {
    const el = $("drawn");
    el.replaceChildren();
    const title = document.createElement("h2");
    if (event.route === "tarot" && Array.isArray(event.cards)) {
      title.textContent = `Cards drawn (${event.spread})`;
      const list = document.createElement("ul");
      list.className = "cards";
      for (const card of event.cards) {
        const item = document.createElement("li");
        item.textContent = card;
        list.append(item);
      }
      el.append(title, list);
    } else if (event.route === "iching" && event.hexagram) {
      title.textContent = "Hexagram cast";
      const line = document.createElement("p");
      line.className = "hexagram";
      line.textContent = `${event.hexagram.number} — ${event.hexagram.name}`;
      el.append(title, line);
    } else {
      return;
    }
    el.hidden = false;
  }

  function clearRun() {
    cancelAnimationFrame(state.frame);
    state.frame = 0;
    $("panels").replaceChildren();
    state.panels.clear();
    $("drawn").replaceChildren();
    $("drawn").hidden = true;
    $("timeline").hidden = true;
    $("timeline-rows").replaceChildren();
    $("timeline-sequential").replaceChildren();
    $("timeline-summary").textContent = "";
    $("export").hidden = true;
    $("export-status").textContent = "";
    showBanner("");
  }

  function handleEvent(event) {
    const run = state.run;
    const panel = event.section !== undefined ? state.panels.get(event.section) : undefined;
    const now = performance.now();
    switch (event.type) {
      case "reading":
        run.reading = event;
        showDrawn(event);
        break;
      case "start":
        $("panels").replaceChildren();
        state.panels.clear();
        run.requestId = event.request_id;
        run.sections = event.sections.slice();
        for (const section of event.sections) makePanel(section);
        $("panels").dataset.count = String(event.sections.length);
        setStatus(`Streaming ${event.sections.length} section(s)…`, "streaming");
        $("timeline").hidden = false;
        scheduleTimeline();
        break;
      case "section_start":
        if (!panel) break;
        panel.startedAt = now;
        panel.model = event.model;
        panel.node.querySelector(".panel-model").textContent = event.model;
        setPanelStatus(panel, "streaming");
        break;
      case "chunk":
        if (!panel) break;
        if (!panel.firstAt) {
          panel.firstAt = now;
          panel.node.querySelector(".panel-ttft").textContent = fmtMs(
            panel.firstAt - (panel.startedAt || run.startedAt)
          );
        }
        panel.textNode.appendData(event.content);
        panel.chars += event.content.length;
        panel.node.querySelector(".panel-chars").textContent = String(panel.chars);
        break;
      case "section_done":
        if (!panel) break;
        panel.endedAt = now;
        panel.ttftMs = event.ttft_ms;
        panel.durationMs = event.duration_ms;
        panel.node.querySelector(".panel-ttft").textContent = fmtMs(event.ttft_ms);
        panel.node.querySelector(".panel-duration").textContent = fmtMs(event.duration_ms);
        setPanelStatus(panel, "done");
        break;
      case "error": {
        if (!panel) break;
        panel.endedAt = now;
        panel.error = { code: event.code, message: event.message };
        // The message says what happened; the machine-readable code stays in an attribute.
        const el = panel.node.querySelector(".panel-error");
        el.textContent = event.message;
        el.dataset.code = event.code;
        el.title = event.code;
        el.hidden = false;
        if (panel.startedAt) {
          panel.durationMs = now - panel.startedAt;
          panel.node.querySelector(".panel-duration").textContent = fmtMs(panel.durationMs);
        }
        setPanelStatus(panel, "error");
        break;
      }
      case "rate_limit":
        showBanner(
          `Rate limited upstream: ${event.sections.join(", ")} continue one at a time ` +
            `after ${fmtMs(event.wait_ms)}.`
        );
        break;
      case "done": {
        run.done = event;
        run.endedAt = now;
        const failed = event.failed.length ? `, ${event.failed.length} failed` : "";
        let outcome = "ok";
        if (event.cancelled) outcome = "cancelled";
        else if (event.failed.length && event.completed.length) outcome = "partial";
        else if (event.failed.length) outcome = "failed";
        const cut = event.cancelled ? " (stopped by the server)" : "";
        setStatus(
          `Done in ${fmtMs(event.duration_ms)}: ${event.completed.length} completed${failed}${cut}.`,
          "done",
          outcome
        );
        $("export").hidden = false;
        break;
      }
      default:
        break; // unknown event types are ignored, as the protocol asks
    }
  }

  // Calls onEvent with each SSE message's data, parsed as JSON, as the response body arrives
  // (comments and other fields are skipped); resolves when the body ends. The batch tab uses
  // it too, through window.backendAI.
  async function readEvents(response, onEvent) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const messages = (buffer + value).split(/\r\n\r\n|\n\n|\r\r/);
      buffer = messages.pop();
      for (const message of messages) {
        const data = [];
        for (const line of message.split(/\r\n|\n|\r/)) {
          if (line.startsWith("data:")) data.push(line.slice(line[5] === " " ? 6 : 5));
        }
        if (data.length) onEvent(JSON.parse(data.join("\n")));
      }
    }
  }

  function markUnfinished(status) {
    const now = performance.now();
    for (const panel of state.panels.values()) {
      if (panel.status === "waiting" || panel.status === "streaming") {
        if (panel.startedAt) panel.endedAt = now;
        setPanelStatus(panel, status);
      }
    }
  }

  // ---- timeline -------------------------------------------------------------------------

  // Section colours, by position; CSS reads them from --hue.
  const HUES = [210, 150, 30, 280, 0, 180, 90, 320, 50];

  function scheduleTimeline() {
    if (!state.frame) state.frame = requestAnimationFrame(drawTimeline);
  }

  function segment(className, leftPct, widthPct, hue) {
    const el = document.createElement("div");
    el.className = className;
    el.style.left = `${leftPct}%`;
    el.style.width = `${Math.max(widthPct, 0)}%`;
    el.style.setProperty("--hue", String(hue));
    return el;
  }

  function drawTimeline() {
    state.frame = 0;
    const run = state.run;
    if (!run || !run.sections) return;
    const now = run.endedAt || performance.now();
    const wall = now - run.startedAt;
    // Each section alone: from its request to its end (or to now while it runs).
    const spans = run.sections.map((name, i) => {
      const p = state.panels.get(name);
      const begin = p && p.startedAt ? p.startedAt : 0;
      const end = p && p.endedAt ? p.endedAt : now;
      return { name, i, p, own: begin ? end - begin : 0 };
    });
    const sequential = spans.reduce((sum, s) => sum + s.own, 0);
    const scale = Math.max(wall, sequential, 1);
    const pct = (ms) => (100 * ms) / scale;

    const rows = $("timeline-rows");
    rows.replaceChildren();
    for (const s of spans) {
      const row = document.createElement("div");
      row.className = "timeline-row";
      row.dataset.section = s.name;
      const label = document.createElement("div");
      label.className = "timeline-label";
      label.textContent = s.name;
      const track = document.createElement("div");
      track.className = "timeline-track";
      const hue = HUES[s.i % HUES.length];
      const p = s.p;
      if (p && p.startedAt) {
        const begin = p.startedAt - run.startedAt;
        const first = p.firstAt ? p.firstAt - run.startedAt : null;
        const end = (p.endedAt || now) - run.startedAt;
        const waitEnd = first === null ? end : first;
        track.append(segment("bar bar-wait", pct(begin), pct(waitEnd - begin), hue));
        if (first !== null) {
          track.append(segment("bar bar-stream", pct(first), pct(end - first), hue));
        }
        row.dataset.status = p.status;
      }
      row.append(label, track);
      rows.append(row);
    }

    const seq = $("timeline-sequential");
    seq.replaceChildren();
    let offset = 0;
    for (const s of spans) {
      if (!s.own) continue;
      const bar = segment("bar bar-stream", pct(offset), pct(s.own), HUES[s.i % HUES.length]);
      bar.title = `${s.name}: ${fmtMs(s.own)}`;
      seq.append(bar);
      offset += s.own;
    }

    const finished = Boolean(run.endedAt);
    const ratio = wall > 0 && sequential > 0 ? ` (${(sequential / wall).toFixed(1)}×)` : "";
    $("timeline-summary").textContent =
      `${finished ? "All at once" : "So far, all at once"}: ${fmtMs(wall)}; ` +
      `one after another: ${fmtMs(sequential)}${ratio}.`;
    $("timeline").dataset.finished = String(finished);
    if (!finished && state.controller) scheduleTimeline();
  }

  // ---- export ---------------------------------------------------------------------------

  function runRecord() {
    const run = state.run;
    const sections = {};
    for (const name of run.sections || []) {
      const p = state.panels.get(name);
      sections[name] = {
        model: p.model,
        status: p.status,
        text: p.textNode.data,
        ttft_ms: p.ttftMs,
        duration_ms: p.durationMs,
        error: p.error,
      };
    }
    const input = { ...run.body };
    delete input.sim;
    return {
      request_id: run.requestId,
      kind: run.kind,
      input,
      reading: run.reading
        ? Object.fromEntries(
            Object.entries(run.reading).filter(([k]) => !["type", "request_id"].includes(k))
          )
        : null,
      sections,
      done: run.done,
    };
  }

  function runMarkdown() {
    const record = runRecord();
    const run = state.run;
    const lines = [`# ${KINDS[run.kind].title}`, ""];
    const asked = record.input[KINDS[run.kind].field] || "";
    lines.push(...asked.split("\n").map((l) => `> ${l}`), "");
    if (record.reading && record.reading.cards) {
      lines.push(`Cards drawn (${record.reading.spread}):`, "");
      lines.push(...record.reading.cards.map((c) => `- ${c}`), "");
    }
    if (record.reading && record.reading.hexagram) {
      const h = record.reading.hexagram;
      lines.push(`Hexagram cast: ${h.number} — ${h.name}`, "");
    }
    for (const [name, s] of Object.entries(record.sections)) {
      lines.push(`## ${name}`, "");
      if (s.text) lines.push(s.text, "");
      if (s.error) lines.push(`_Error (${s.error.code}): ${s.error.message}_`, "");
    }
    if (record.done) {
      lines.push(
        `_${record.done.completed.length} completed, ${record.done.failed.length} failed, ` +
          `${fmtMs(record.done.duration_ms)}; request ${record.request_id}._`
      );
    }
    return lines.join("\n") + "\n";
  }

  function download(text, type, extension) {
    const blob = new Blob([text], { type });
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = `backend-ai-${state.run.kind}-${state.run.requestId || "run"}.${extension}`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  async function copyMarkdown() {
    const text = runMarkdown();
    try {
      await navigator.clipboard.writeText(text);
    } catch (err) {
      // Without the async clipboard (a plain-http page other than localhost), fall back.
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "offscreen";
      document.body.append(area);
      area.select();
      const ok = document.execCommand("copy");
      area.remove();
      if (!ok) {
        $("export-status").textContent = "Copying is not allowed here; use Download.";
        return;
      }
    }
    $("export-status").textContent = "Copied.";
  }

  // ---- history --------------------------------------------------------------------------

  function historySummary(reading) {
    const sections = Object.values(reading.sections || {});
    const done = sections.filter((s) => s.status === "done").length;
    const input = reading.input || {};
    const text = input.dream || input.question || input.prompt || "";
    return {
      when: new Date(reading.created_at * 1000).toLocaleString(),
      text: text.length > 90 ? `${text.slice(0, 90)}…` : text,
      outcome: reading.cancelled
        ? "cancelled"
        : done === sections.length
          ? "ok"
          : done
            ? "partial"
            : "failed",
      counts: `${done}/${sections.length} sections`,
    };
  }

  function historyItem(reading) {
    const summary = historySummary(reading);
    const item = document.createElement("li");
    item.className = "history-item";
    item.dataset.outcome = summary.outcome;
    item.dataset.requestId = reading.request_id;
    const details = document.createElement("details");
    const head = document.createElement("summary");
    const route = document.createElement("span");
    route.className = "history-route";
    route.textContent = reading.route;
    const text = document.createElement("span");
    text.className = "history-text";
    text.textContent = summary.text;
    const meta = document.createElement("span");
    meta.className = "history-meta";
    meta.textContent = `${summary.when} · ${summary.counts} · ${fmtMs(reading.duration_ms)}`;
    head.append(route, text, meta);
    details.append(head);
    const input = reading.input || {};
    if (Array.isArray(input.cards)) {
      const cards = document.createElement("p");
      cards.className = "history-drawn";
      cards.textContent = `Cards: ${input.cards.join(" · ")}`;
      details.append(cards);
    }
    if (input.hexagram) {
      const hexagram = document.createElement("p");
      hexagram.className = "history-drawn";
      hexagram.textContent = `Hexagram ${input.hexagram}`;
      details.append(hexagram);
    }
    for (const [name, s] of Object.entries(reading.sections || {})) {
      const title = document.createElement("h3");
      title.textContent = `${name} (${s.status})`;
      const body = document.createElement("div");
      body.className = "history-section-text";
      body.textContent = s.text || s.error_message || "";
      details.append(title, body);
    }
    item.append(details);
    return item;
  }

  async function loadHistory() {
    const list = $("history-list");
    $("history-status").textContent = "Loading…";
    try {
      const response = await fetch("/history?limit=20", {
        cache: "no-store",
        headers: authHeaders(),
      });
      const body = await response.json();
      if (!response.ok) {
        list.replaceChildren();
        $("history-status").textContent =
          body.error && body.error.code === "history_disabled"
            ? "History is off on this server."
            : `${response.status} ${body.error ? body.error.message : ""}`;
        return;
      }
      list.replaceChildren(...body.readings.map(historyItem));
      $("history-status").textContent = body.readings.length
        ? `${body.readings.length} most recent, newest first.`
        : "No readings yet.";
    } catch (err) {
      $("history-status").textContent = "The history could not be loaded.";
    }
  }

  // ---- a run ----------------------------------------------------------------------------

  async function errorMessage(response) {
    try {
      const body = await response.json();
      return `${response.status} ${body.error.code}: ${body.error.message}`;
    } catch (err) {
      return `HTTP ${response.status}`;
    }
  }

  async function start(ev) {
    ev.preventDefault();
    if (state.controller) return;
    clearRun();
    let body;
    try {
      body = buildBody();
    } catch (err) {
      showBanner("Simulator controls must be a JSON object.");
      return;
    }
    const controller = new AbortController();
    state.controller = controller;
    state.run = {
      kind: kind(),
      body,
      startedAt: performance.now(),
      endedAt: 0,
      requestId: null,
      sections: null,
      reading: null,
      done: null,
    };
    $("start").disabled = true;
    $("stop").disabled = false;
    setStatus("Starting…", "starting");
    const headers = {
      "Content-Type": "application/json",
      Accept: "text/event-stream",
      ...authHeaders(),
    };
    try {
      const response = await fetch(KINDS[state.run.kind].url(), {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        signal: controller.signal,
        cache: "no-store",
      });
      if (!response.ok) {
        const message = await errorMessage(response);
        showBanner(message);
        setStatus("Refused.", "refused");
        return;
      }
      await readEvents(response, handleEvent);
      if ($("run-status").dataset.state !== "done") {
        markUnfinished("cut");
        setStatus("The connection ended before the run did.", "cut");
      }
    } catch (err) {
      if (err.name === "AbortError") {
        markUnfinished("stopped");
        setStatus("Stopped.", "stopped");
      } else {
        markUnfinished("cut");
        showBanner(`Connection failed: ${err.message}`);
        setStatus("Failed.", "failed");
      }
    } finally {
      state.controller = null;
      if (state.run && !state.run.endedAt) state.run.endedAt = performance.now();
      if (state.run && state.run.sections) drawTimeline();
      $("start").disabled = false;
      $("stop").disabled = true;
    }
  }

  function stop() {
    if (state.controller) state.controller.abort();
  }

  function init() {
    for (const input of document.querySelectorAll('input[name="kind"]')) {
      input.addEventListener("change", onKindChange);
    }
    $("text").addEventListener("input", () => {
      $("text-count").textContent = String($("text").value.length);
    });
    $("form").addEventListener("submit", start);
    $("stop").addEventListener("click", stop);
    $("tabs").addEventListener("click", (ev) => {
      const button = ev.target.closest("[data-tab]");
      if (button) showTab(button.dataset.tab);
    });
    document.addEventListener("backend-ai:tab", (ev) => {
      if (ev.detail === "history") loadHistory();
    });
    $("history-refresh").addEventListener("click", loadHistory);
    $("copy-md").addEventListener("click", copyMarkdown);
    $("download-md").addEventListener("click", () =>
      download(runMarkdown(), "text/markdown", "md")
    );
    $("download-json").addEventListener("click", () =>
      download(JSON.stringify(runRecord(), null, 2) + "\n", "application/json", "json")
    );
    onKindChange();
    loadHealth();
  }

  // For other scripts of the page (an extra tab): add and switch tabs, reuse the auth header.
  window.backendAI = { addTab, showTab, authHeaders, readEvents };

  init();
})();
