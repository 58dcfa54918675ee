// The live page: POSTs a reading, reads the SSE answer with fetch + a stream reader
// (EventSource cannot POST), and fills one panel per section as its chunks arrive.
// Server text only ever goes into textContent / text nodes, never into HTML.
"use strict";

(function () {
  const KINDS = {
    dream: { label: "Your dream", field: "dream", url: () => "/dream/interpret-stream" },
    iching: { label: "Your question", field: "question", url: () => "/iching/reading-stream" },
    tarot: {
      label: "Your question",
      field: "question",
      url: () => `/tarot/${encodeURIComponent($("spread").value)}-stream`,
    },
    compare: { label: "Prompt", field: "prompt", url: () => "/compare/stream" },
  };

  function $(id) {
    return document.getElementById(id);
  }

  const state = { controller: null, panels: new Map(), startedAt: 0, health: null };

  function kind() {
    return document.querySelector('input[name="kind"]:checked').value;
  }

  function setStatus(text, runState) {
    const el = $("run-status");
    el.textContent = text;
    el.dataset.state = runState;
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

  function makePanel(section) {
    const node = $("panel-template").content.firstElementChild.cloneNode(true);
    node.dataset.section = section;
    node.querySelector(".panel-name").textContent = section;
    const textNode = document.createTextNode("");
    node.querySelector(".panel-text").append(textNode);
    $("panels").append(node);
    const panel = { node, textNode, chars: 0, startedAt: 0, firstAt: 0 };
    state.panels.set(section, panel);
    return panel;
  }

  function setPanelStatus(panel, status) {
    panel.node.dataset.status = status;
    panel.node.querySelector(".panel-status").textContent = status;
  }

  function handleEvent(event) {
    const panel = event.section !== undefined ? state.panels.get(event.section) : undefined;
    switch (event.type) {
      case "start":
        $("panels").replaceChildren();
        state.panels.clear();
        for (const section of event.sections) makePanel(section);
        $("panels").dataset.count = String(event.sections.length);
        setStatus(`Streaming ${event.sections.length} section(s)…`, "streaming");
        break;
      case "section_start":
        if (!panel) break;
        panel.startedAt = performance.now();
        panel.node.querySelector(".panel-model").textContent = event.model;
        setPanelStatus(panel, "streaming");
        break;
      case "chunk":
        if (!panel) break;
        if (!panel.firstAt) {
          panel.firstAt = performance.now();
          panel.node.querySelector(".panel-ttft").textContent = fmtMs(
            panel.firstAt - (panel.startedAt || state.startedAt)
          );
        }
        panel.textNode.appendData(event.content);
        panel.chars += event.content.length;
        panel.node.querySelector(".panel-chars").textContent = String(panel.chars);
        break;
      case "section_done":
        if (!panel) break;
        panel.node.querySelector(".panel-ttft").textContent = fmtMs(event.ttft_ms);
        panel.node.querySelector(".panel-duration").textContent = fmtMs(event.duration_ms);
        setPanelStatus(panel, "done");
        break;
      case "error": {
        if (!panel) break;
        const el = panel.node.querySelector(".panel-error");
        el.textContent = `${event.code}: ${event.message}`;
        el.hidden = false;
        if (panel.startedAt) {
          panel.node.querySelector(".panel-duration").textContent = fmtMs(
            performance.now() - panel.startedAt
          );
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
        const failed = event.failed.length ? `, ${event.failed.length} failed` : "";
        setStatus(
          `Done in ${fmtMs(event.duration_ms)}: ${event.completed.length} completed${failed}.`,
          "done"
        );
        break;
      }
      default:
        break; // unknown event types are ignored, as the protocol asks
    }
  }

  // Splits the byte stream into SSE messages; returns the unfinished tail.
  function consume(buffer) {
    const messages = buffer.split(/\r\n\r\n|\n\n|\r\r/);
    const tail = messages.pop();
    for (const message of messages) {
      const data = [];
      for (const line of message.split(/\r\n|\n|\r/)) {
        if (line.startsWith("data:")) data.push(line.slice(line[5] === " " ? 6 : 5));
      }
      if (data.length) handleEvent(JSON.parse(data.join("\n")));
    }
    return tail;
  }

  function markUnfinished(status) {
    for (const panel of state.panels.values()) {
      const s = panel.node.dataset.status;
      if (s === "waiting" || s === "streaming") setPanelStatus(panel, status);
    }
  }

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
    showBanner("");
    let body;
    try {
      body = buildBody();
    } catch (err) {
      showBanner("Simulator controls must be a JSON object.");
      return;
    }
    const controller = new AbortController();
    state.controller = controller;
    state.startedAt = performance.now();
    $("start").disabled = true;
    $("stop").disabled = false;
    setStatus("Starting…", "starting");
    const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
    if (!$("token-row").hidden && $("token").value) {
      headers.Authorization = `Bearer ${$("token").value}`;
    }
    try {
      const response = await fetch(KINDS[kind()].url(), {
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
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = consume(buffer + value);
      }
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
    onKindChange();
    loadHealth();
  }

  init();
})();
