// goose-sidecar dashboard: polls /status and renders it. No library, no network access but this origin.
// Every value comes from /status and is written with textContent (never parsed as HTML). Cells that show a number
// carry it raw in data-v (with its key in data-k) so tests can compare the page with /status.
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const pollMs = Math.max(250, Number(params.get("interval") || 2) * 1000);
  const TIERS = ["hot", "warm", "cold"];
  const STATES = ["queued", "running", "idle"];
  const COLORS = { hot: "#d9480f", warm: "#d99400", cold: "#1c7ed6" };
  const view = { sort: null, asc: true, filter: "" };
  let lastStatus = null;

  // --- tiny DOM helpers ----------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "title") node.title = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  function fill(id, ...children) {
    const node = document.getElementById(id);
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
    return node;
  }
  // A number shown formatted, with its raw value and key for tests.
  function num(key, raw, text, cls) {
    return el("span", { "data-k": key, "data-v": raw === null || raw === undefined ? "" : String(raw), class: cls }, text);
  }

  // --- formatting (units always shown) ---------------------------------------------------------------------
  const dash = "–";
  function fmtInt(v) { return v === null || v === undefined ? dash : Math.round(v).toLocaleString("en-US"); }
  function fmtMs(v) {
    if (v === null || v === undefined) return dash;
    if (v === 0) return "0 ms";
    if (v < 1) return v.toFixed(2) + " ms";
    if (v < 1000) return v.toFixed(v < 10 ? 1 : 0) + " ms";
    return (v / 1000).toFixed(v < 10000 ? 2 : 1) + " s";
  }
  function fmtS(v) { return v === null || v === undefined ? dash : fmtMs(v * 1000); }
  function fmtDuration(s) {
    if (s === null || s === undefined) return dash;
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    if (s < 3600) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(2) + " h";
  }
  function fmtPct(v) { return v === null || v === undefined ? dash : (v * 100).toFixed(v < 0.1 ? 1 : 0) + " %"; }
  function fmtUsd(v) { return v === null || v === undefined ? dash : "$" + v.toFixed(v < 1 ? 4 : 2); }
  function fmtAgo(s) { return s === null || s === undefined ? dash : s < 1 ? "now" : fmtDuration(s); }

  // --- polling -----------------------------------------------------------------------------------------------
  function setConn(state, text) {
    const conn = document.getElementById("conn");
    conn.className = "conn " + state;
    document.getElementById("conn-text").textContent = text;
  }
  function banner(text) {
    const node = document.getElementById("banner");
    node.hidden = !text;
    node.textContent = text || "";
  }
  async function poll() {
    try {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      const response = await fetch("status", { headers, cache: "no-store" });
      if (response.status === 401) {
        banner("The coordinator needs its admin token: open this page as /dashboard?token=TOKEN.");
        setConn("down", "unauthorized");
      } else if (!response.ok) {
        throw new Error("HTTP " + response.status);
      } else {
        const status = await response.json();
        lastStatus = status;
        banner("");
        render(status);
        setConn("live", "live · updated " + new Date().toLocaleTimeString() + " · every " + pollMs / 1000 + " s");
      }
    } catch (err) {
      setConn("down", "coordinator unreachable (" + err.message + ")");
    } finally {
      setTimeout(poll, pollMs);
    }
  }

  function render(s) {
    renderKpis(s);
    renderAgents(s);
    renderCharts(s);
    renderTiers(s);
    renderUpstreams(s);
    renderKv(s);
    renderSavings(s);
    renderCaches(s);
    document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
  }

  // --- summary cards ---------------------------------------------------------------------------------------
  function kpi(label, value, detail) {
    return el("div", { class: "kpi" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value),
      detail ? el("div", { class: "detail" }, detail) : null);
  }
  function total(s, field) {
    return Object.values(s.scheduling || {}).reduce((n, d) => n + d[field], 0);
  }
  function renderKpis(s) {
    const t = s.totals;
    const lat = s.latency_ms.total;
    const sav = s.savings || {};
    const cache = s.tool_cache || {};
    const spec = s.speculation;
    fill("kpis",
      kpi("agents", num("totals.agents", t.agents, fmtInt(t.agents)), "up " + fmtDuration(s.uptime_s) + " · v" + s.version),
      kpi("running / queued", [num("running_total", total(s, "in_flight"), fmtInt(total(s, "in_flight"))), " / ",
        num("queued_total", total(s, "queued"), fmtInt(total(s, "queued")))], "calls holding a slot upstream / waiting for one"),
      kpi("calls", num("totals.requests", t.requests, fmtInt(t.requests)),
        [num("totals.errors", t.errors, fmtInt(t.errors)), " errors"]),
      kpi("latency p50", num("latency.total.p50", lat.p50, fmtMs(lat.p50)),
        ["p95 ", num("latency.total.p95", lat.p95, fmtMs(lat.p95)), " · to last byte, last " + fmtInt(s.latency_ms.window) + " calls"]),
      sav.routing === false ? kpi("GPU time saved (est.)", "none", "no routing: one upstream")
        : kpi("GPU time saved (est.)", num("savings.gpu_s_saved", sav.gpu_s_saved, fmtDuration(sav.gpu_s_saved)),
          [num("savings.usd_saved", sav.usd_saved, fmtUsd(sav.usd_saved)), " at $" + (sav.gpu_hour_usd ?? 0).toFixed(2) + "/GPU-hour"]),
      kpi("tool cache hit rate", num("tool_cache.hit_rate", cache.hit_rate, fmtPct(cache.hit_rate)),
        fmtInt(cache.hits) + " of " + fmtInt(cache.calls) + " cacheable calls"),
      kpi("speculation hit rate", spec && spec.enabled ? num("speculation.hit_rate", specRate(spec), fmtPct(specRate(spec)))
        : num("speculation", "", "not enabled"), spec && spec.enabled
        ? fmtInt(spec.served) + " served of " + fmtInt(spec.started) + " speculative calls" : "[speculation] enabled = false"),
    );
  }
  // Speculative LLM calls the agent's real next request used, of those started (coordinator's Speculator).
  function specRate(spec) {
    return spec.started ? spec.served / spec.started : null;
  }

  // --- agents ------------------------------------------------------------------------------------------------
  const GATES = { window: "window", pools: "pools", working_set: "KV room" };
  const GATE_TITLES = { window: "waits for the in-flight window", pools: "waits for a place in its pool",
    working_set: "waits for room in the KV working set" };
  function agentWait(a) { return a.state === "queued" ? a.waiting_s : a.last_wait_ms / 1000; }
  function defaultOrder(a, b) {
    const sa = STATES.indexOf(a.state), sb = STATES.indexOf(b.state);
    if (sa !== sb) return sa - sb;
    const wa = a.waiting_s || 0, wb = b.waiting_s || 0;
    if (wa !== wb) return wb - wa;
    const ta = TIERS.indexOf(a.tier), tb = TIERS.indexOf(b.tier);
    if (ta !== tb) return (ta < 0 ? 9 : ta) - (tb < 0 ? 9 : tb);
    return a.agent_id < b.agent_id ? -1 : a.agent_id > b.agent_id ? 1 : 0;
  }
  function sortValue(a, key) {
    if (key === "wait") return agentWait(a);
    if (key === "state") return STATES.indexOf(a.state);
    if (key === "tier") return TIERS.indexOf(a.tier);
    return a[key];
  }
  function compare(key, asc) {
    return (a, b) => {
      let va = sortValue(a, key), vb = sortValue(b, key);
      if (va === null || va === undefined) return 1;
      if (vb === null || vb === undefined) return -1;
      const c = typeof va === "string" ? va.localeCompare(vb) : va - vb;
      return (asc ? c : -c) || defaultOrder(a, b);
    };
  }
  function renderAgents(s) {
    const agents = s.agents || [];
    const counts = { queued: 0, running: 0, idle: 0 };
    for (const a of agents) counts[a.state] = (counts[a.state] || 0) + 1;
    fill("agent-counts", STATES.map((st) => el("span", { class: "chip" },
      num("agents." + st, counts[st], fmtInt(counts[st])), " " + st)));
    const needle = view.filter.toLowerCase();
    let rows = needle
      ? agents.filter((a) => [a.agent_id, a.stage, a.tier, a.model, a.state].some((v) => v && v.toLowerCase().includes(needle)))
      : agents.slice();
    rows.sort(view.sort ? compare(view.sort, view.asc) : defaultOrder);
    const cell = (field, raw, text, cls) =>
      el("td", { "data-f": field, "data-v": raw === null || raw === undefined ? "" : String(raw), class: cls }, text);
    const body = rows.map((a) => el("tr", { "data-agent": a.agent_id, class: a.state },
      cell("agent_id", a.agent_id, a.agent_id, "id"),
      el("td", { "data-f": "state", "data-v": a.state }, el("span", { class: "state " + a.state }, a.state)),
      cell("stage", a.stage, a.stage || dash),
      el("td", { "data-f": "tier", "data-v": a.tier || "" }, a.tier ? el("span", { class: "tier " + a.tier }, a.tier) : dash),
      cell("model", a.model, a.model || dash),
      el("td", { "data-f": "wait_s", "data-v": agentWait(a) ?? "", class: "num" + (a.state === "queued" ? " waiting" : "") },
        fmtS(agentWait(a)), a.waiting_on ? el("span", { class: "gate", "data-f": "waiting_on", "data-v": a.waiting_on,
          title: GATE_TITLES[a.waiting_on] || a.waiting_on }, GATES[a.waiting_on] || a.waiting_on) : null),
      cell("requests", a.requests, fmtInt(a.requests), "num"),
      cell("errors", a.errors, fmtInt(a.errors), "num" + (a.errors ? " bad" : "")),
      cell("tool_calls", a.tool_calls ?? 0, fmtInt(a.tool_calls ?? 0), "num"),
      cell("cache_hit_rate", a.cache_hit_rate, fmtPct(a.cache_hit_rate), "num"),
      cell("attained_service_tokens", a.attained_service_tokens, fmtInt(a.attained_service_tokens), "num"),
      cell("kv_resident_tokens", a.kv_resident_tokens ?? 0, fmtInt(a.kv_resident_tokens ?? 0), "num"),
      cell("last_seen_s_ago", a.last_seen_s_ago, fmtAgo(a.last_seen_s_ago), "num"),
    ));
    document.querySelector("#agents tbody").replaceChildren(...body);
    for (const th of document.querySelectorAll("#agents th")) {
      const sorted = th.dataset.sort === view.sort;
      th.classList.toggle("sorted", sorted);
      th.classList.toggle("asc", sorted && view.asc);
    }
    document.getElementById("agents-note").textContent =
      (needle ? rows.length + " of " + agents.length + " agents match. " : "") +
      "Default order: queued (longest wait first), running, idle; hot before cold. Click a column to sort.";
  }

  // --- charts ------------------------------------------------------------------------------------------------
  // Series of [secondsAgo, value]; x runs from -span to now. One line per tier.
  function lineChart(title, seriesByName, span, opts) {
    const W = 300, H = 96, L = 30, R = 6, T = 6, B = 16;
    let max = opts.max;
    if (max === undefined) {
      max = 1;
      for (const pts of Object.values(seriesByName)) for (const [, v] of pts) if (v !== null && v > max) max = v;
      max = Math.ceil(max);
    }
    const x = (ago) => L + (W - L - R) * (1 - Math.min(ago, span) / span);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": title });
    root.append(svg("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), stroke: "#ced4da" }));
    root.append(svg("line", { x1: L, x2: W - R, y1: y(max), y2: y(max), stroke: "#f1f3f5" }));
    root.append(svg("text", { x: L - 4, y: y(max) + 4, "text-anchor": "end" }, opts.fmt ? opts.fmt(max) : max));
    root.append(svg("text", { x: L - 4, y: y(0) + 3, "text-anchor": "end" }, "0"));
    root.append(svg("text", { x: L, y: H - 3 }, "−" + Math.round(span / 60) + " min"));
    root.append(svg("text", { x: W - R, y: H - 3, "text-anchor": "end" }, "now"));
    for (const [name, pts] of Object.entries(seriesByName)) {
      const coords = pts.filter(([, v]) => v !== null && v !== undefined).map(([ago, v]) => x(ago).toFixed(1) + "," + y(v).toFixed(1));
      if (coords.length) {
        root.append(svg("polyline", { points: coords.join(" "), fill: "none", stroke: opts.colors[name] || "#495057",
          "stroke-width": 1.6, "vector-effect": "non-scaling-stroke", "data-series": name }));
      }
    }
    return el("div", { class: "chart" }, el("div", { class: "title" }, title), root);
  }
  function renderCharts(s) {
    const h = s.history || { ago_s: [], models: {}, span_s: 300, interval_s: 2 };
    // The x axis covers what the history holds: at least a minute, at most its span.
    const oldest = h.ago_s.length ? h.ago_s[0] : 0;
    const span = Math.min(h.span_s || 300, Math.max(60, Math.ceil(oldest / 60) * 60));
    document.getElementById("history-span").textContent =
      "last " + Math.round(span / 60) + " min, sampled every " + h.interval_s + " s";
    const blocks = [];
    for (const [alias, d] of Object.entries(s.scheduling || {})) {
      const past = h.models[alias];
      const series = (kind) => Object.fromEntries(TIERS.map((t) => [t,
        (past ? past[kind][t].map((v, i) => [h.ago_s[i], v]) : []).concat([[0, d.tiers[t][kind]]])]));
      const metrics = d.upstream_metrics;
      const kv = { kv: (past ? past.kv_usage.map((v, i) => [h.ago_s[i], v === null ? null : v * 100]) : [])
        .concat([[0, metrics ? metrics.kv_usage * 100 : null]]) };
      const up = (s.upstreams || []).find((u) => u.alias === alias);
      blocks.push(el("div", { class: "charts-model", "data-model": alias },
        el("h3", {}, alias, " ", el("span", { class: "muted" }, up && up.served_names.length ? "· " + up.served_names[0] : "")),
        el("div", { class: "charts-row" },
          lineChart("queued calls (coordinator)", series("queued"), span, { colors: COLORS }),
          lineChart("in-flight calls", series("in_flight"), span, { colors: COLORS }),
          lineChart(metrics ? "upstream KV cache usage (%)" : "upstream KV usage: no metrics", kv, span,
            { colors: { kv: "#7048e8" }, max: 100, fmt: (v) => v + "%" }))));
    }
    blocks.push(el("div", { class: "legend" }, TIERS.map((t) => el("span", {}, el("i", { style: "background:" + COLORS[t] }), t)),
      el("span", {}, el("i", { style: "background:#7048e8" }), "KV usage")));
    fill("charts", blocks);
  }

  // --- per tier table ----------------------------------------------------------------------------------------
  function renderTiers(s) {
    const head = el("tr", {}, ["model / tier", "queued", "in flight", "admitted", "rejected", "aged up",
      "wait p50", "wait p95", "latency p50", "p95", "p99"].map((h, i) => el("th", { class: i ? "num" : "" }, h)));
    const rows = [el("thead", {}, head)];
    const body = el("tbody");
    for (const [alias, d] of Object.entries(s.scheduling || {})) {
      const policy = d.policy + (d.window !== null && d.window !== undefined ? " · window " + d.window : "");
      body.append(el("tr", { class: "model" }, el("td", { colspan: 11 }, alias + "  ", el("span", { class: "muted" }, policy))));
      for (const t of TIERS) {
        const c = d.tiers[t];
        const k = "sched." + alias + "." + t + ".";
        const td = (key, raw, text) => el("td", { class: "num" }, num(k + key, raw, text));
        body.append(el("tr", {},
          el("td", {}, el("span", { class: "tier " + t }, t)),
          td("queued", c.queued, fmtInt(c.queued)), td("in_flight", c.in_flight, fmtInt(c.in_flight)),
          td("admitted", c.admitted, fmtInt(c.admitted)), td("rejected", c.rejected, fmtInt(c.rejected)),
          td("promoted_by_aging", c.promoted_by_aging, fmtInt(c.promoted_by_aging)),
          td("wait_ms.p50", c.wait_ms.p50, fmtMs(c.wait_ms.p50)), td("wait_ms.p95", c.wait_ms.p95, fmtMs(c.wait_ms.p95)),
          td("latency_ms.p50", c.latency_ms.p50, fmtMs(c.latency_ms.p50)),
          td("latency_ms.p95", c.latency_ms.p95, fmtMs(c.latency_ms.p95)),
          td("latency_ms.p99", c.latency_ms.p99, fmtMs(c.latency_ms.p99))));
      }
    }
    rows.push(body);
    fill("tiers", rows);
  }

  // --- upstreams -----------------------------------------------------------------------------------------
  function bar(frac) {
    const cls = frac >= 0.8 ? "bar full" : frac >= 0.6 ? "bar warn" : "bar";
    return el("div", { class: cls }, el("span", { style: "width:" + Math.min(100, Math.max(0, frac * 100)).toFixed(1) + "%" }));
  }
  const TITLES = {
    "KV cache": "vLLM's KV cache usage (vllm:kv_cache_usage_perc)", running: "sequences vLLM is running now",
    waiting: "requests waiting inside vLLM", "preempt.": "vLLM preemptions since it started",
    window: "calls the coordinator lets run on this model at once", age: "age of the last metrics scrape",
  };
  function renderUpstreams(s) {
    const head = el("tr", {}, ["model", "KV cache", "running", "waiting", "preempt.", "window", "age"]
      .map((h, i) => el("th", { class: i > 1 ? "num" : "", title: TITLES[h] }, h)));
    const body = el("tbody");
    for (const u of s.upstreams || []) {
      const d = (s.scheduling || {})[u.alias] || {};
      const m = d.upstream_metrics;
      const k = "up." + u.alias + ".";
      const metric = (name, text) => el("td", { class: "num" }, num(k + name, m ? m[name] : null, m ? text : dash));
      body.append(el("tr", { class: "model" },
        el("td", {}, u.alias),
        el("td", {}, m ? el("div", { class: "kv" }, bar(m.kv_usage), num(k + "kv_usage", m.kv_usage, fmtPct(m.kv_usage)))
          : el("span", { class: "muted" }, "no vLLM metrics")),
        metric("running", m && fmtInt(m.running)),
        metric("waiting", m && fmtInt(m.waiting)),
        metric("preemptions_total", m && fmtInt(m.preemptions_total)),
        el("td", { class: "num", title: d.window_reason || "" }, num(k + "window", d.window ?? null, d.window ?? dash)),
        el("td", { class: "num" }, m ? fmtS(m.age_s) : dash)));
      body.append(el("tr", {}, el("td", { colspan: 7, class: "replica" },
        "native priority ", num("scheduling." + u.alias + ".native_priority", d.native_priority,
          d.native_priority ? "on" : u.native_priority ? "declared, unused (fcfs)" : "off (not declared)",
          d.native_priority ? "ok" : ""),
        " · metrics " + (d.upstream_state ?? dash),
        " · engine slots ", num("scheduling." + u.alias + ".engine_slots", d.engine_slots ?? null,
          d.engine_slots == null ? "unknown" : fmtInt(d.engine_slots) + " (" + d.engine_slots_source + ")"))));
      u.replicas.forEach((r, i) => {
        const rk = "replica." + u.alias + "." + i + ".";
        body.append(el("tr", {}, el("td", { colspan: 7, class: "replica" },
          "replica " + (i + 1) + "  ", el("code", {}, r.url), "  ",
          num(rk + "healthy", r.healthy, r.healthy ? "healthy" : "down", r.healthy ? "ok" : "bad"), " · ",
          num(rk + "in_flight", r.in_flight, fmtInt(r.in_flight)), " in flight · ",
          num(rk + "served", r.served, fmtInt(r.served)), " served",
          r.last_error ? el("span", { class: "bad" }, " · " + r.last_error) : null)));
      });
    }
    fill("upstreams", el("div", { class: "table-wrap" }, el("table", { class: "compact" }, el("thead", {}, head), body)),
      el("p", { class: "note" }, "KV cache, running and waiting are the upstream's own vLLM metrics (over its replicas: KV the " +
        "highest, counts summed); KV above 80 % means new calls queue or preempt. The window is how many calls the coordinator " +
        "lets run upstream at once: the engine's running capacity (configured, or learned from how many vLLM runs while it " +
        "queues), plus one call waiting inside vLLM when native priority is on; hotter calls may pass a full window there, " +
        "because vLLM orders them ahead of colder work it holds. Native priority is configuration: vLLM gives no sign of it."));
  }

  // --- KV working set (the kv policy) and what waiting calls wait on ---------------------------------------------
  function waitText(w) {
    if (!w) return "nothing waits";
    const n = fmtInt(w.calls) + (w.calls === 1 ? " call waits" : " calls wait");
    if (w.gate === "window") return n + " on the window (" + fmtInt(w.in_flight) + " of " + fmtInt(w.window) + " in flight)";
    if (w.gate === "pools") return n + " on the pools (hot " + fmtInt(w.hot_pool_in_use) + ", cold " + fmtInt(w.cold_pool_in_use) + " in use)";
    if (w.gate === "working_set" && w.agent !== undefined) return n + " for room in the working set: " + w.agent + " needs " +
      fmtInt(w.needs_tokens) + " tokens, the places (" + w.places.join(", ") + ") plan " + fmtInt(w.planned_tokens) + " of " +
      fmtInt(w.limit_tokens);
    return n + " on " + w.gate;
  }
  function renderKv(s) {
    const blocks = [];
    for (const [alias, m] of Object.entries(s.kv || {})) {
      const k = "kv." + alias + ".";
      const w = m.working_set;
      const ws = k + "working_set.";
      const rows = [el("dt", {}, "waits"), el("dd", {}, m.waiting_on
        ? num(k + "waiting_on.calls", m.waiting_on.calls, waitText(m.waiting_on), "waiting") : waitText(null))];
      if (w) {
        const c = w.correction;
        rows.push(
          el("dt", {}, "capacity"), el("dd", {}, num(ws + "capacity_tokens", w.capacity_tokens, fmtInt(w.capacity_tokens)),
            " tokens (" + (w.capacity_source === "engine" ? "vLLM's cache_config_info" : "configured") + ") · usable ",
            num(ws + "usable_tokens", w.usable_tokens, fmtInt(w.usable_tokens))),
          el("dt", {}, "working set"), el("dd", {}, el("div", { class: "kv" }, bar(w.capacity_tokens ? w.working_set_tokens / w.capacity_tokens : 0),
            num(ws + "working_set_tokens", w.working_set_tokens, fmtInt(w.working_set_tokens)), " tokens, " +
            fmtInt(w.agents_with_place) + " agents with a place")),
          el("dt", {}, "resident (est.)"), el("dd", {}, el("div", { class: "kv" }, bar(w.capacity_tokens ? w.resident_tokens / w.capacity_tokens : 0),
            num(ws + "resident_tokens", w.resident_tokens, fmtInt(w.resident_tokens)), " tokens, " + fmtInt(w.agents_resident) + " agents")),
          el("dt", {}, "correction"), el("dd", {}, c ? [
            "scale ", num(ws + "correction.scale", c.scale, c.scale.toFixed(2)), " · residency ",
            num(ws + "correction.residency", c.residency, fmtPct(c.residency)), " · vLLM prefix hits ",
            num(ws + "correction.engine_prefix_hit_ratio", c.engine_prefix_hit_ratio, fmtPct(c.engine_prefix_hit_ratio)),
            " vs expected ", fmtPct(c.expected_prefix_hit_ratio)] : "off"));
      }
      blocks.push(el("div", { "data-model": alias }, el("h3", {}, alias, " ", el("span", { class: "muted" }, "· gate " + m.gate)),
        el("dl", { class: "facts" }, rows)));
    }
    fill("kvset", blocks, el("p", { class: "note" }, "A waiting call waits on its policy's gate: the in-flight window (priority), " +
      "the pools, or the KV working set (kv policy: the agents with a call in flight or back from one moments ago, whose " +
      "contexts must fit the engine's KV; a new agent waits for room instead of evicting them). Tokens are the coordinator's " +
      "estimate from each answer's usage, scaled by what vLLM reports holding (kv_cache_usage_perc); residency shrinks the " +
      "usable capacity when vLLM's prefix-cache hit ratio falls below what the estimate expected."));
  }

  // --- savings ---------------------------------------------------------------------------------------------
  function renderSavings(s) {
    const sv = s.savings;
    if (!sv) return fill("savings", el("p", { class: "muted" }, "not reported by this coordinator"));
    if (sv.routing === false) return fill("savings", el("p", { class: "muted" },
      "no routing: one upstream serves every call, so the small model saves nothing here"));
    const r = sv.routed;
    fill("savings",
      el("div", { class: "pair" },
        el("div", {}, el("div", { class: "label" }, "GPU time saved"), el("div", { class: "big" }, num("savings.gpu_s_saved", sv.gpu_s_saved, fmtDuration(sv.gpu_s_saved)))),
        el("div", {}, el("div", { class: "label" }, "cost saved"), el("div", { class: "big" }, num("savings.usd_saved", sv.usd_saved, fmtUsd(sv.usd_saved)))),
        el("div", {}, el("div", { class: "label" }, "price"), el("div", { class: "big" }, "$" + sv.gpu_hour_usd.toFixed(2), el("span", { class: "muted" }, " /GPU-hour")))),
      el("dl", { class: "facts" },
        el("dt", {}, "calls on the small model"), el("dd", {}, num("savings.routed.calls", r.calls, fmtInt(r.calls)),
          r.calls_without_usage ? " (" + fmtInt(r.calls_without_usage) + " without a usage report, not counted)" : ""),
        el("dt", {}, "their tokens"), el("dd", {}, num("savings.routed.prompt_tokens", r.prompt_tokens, fmtInt(r.prompt_tokens)), " prompt (",
          fmtInt(r.cached_prompt_tokens), " prefix-cached) · ", num("savings.routed.completion_tokens", r.completion_tokens, fmtInt(r.completion_tokens)), " output"),
        el("dt", {}, "GPU time on the small model"), el("dd", {}, fmtDuration(sv.gpu_s_on_small) + " vs " + fmtDuration(sv.gpu_s_if_large) + " had " + sv.large_alias + " served them")),
      el("p", { class: "note" }, "How: every call answered by a model other than '" + sv.large_alias + "' (routed there by the stage's route, " +
        "spilled over, or named by the client) is priced per token at the large model's GPU cost minus the small one's. Per-token costs: " +
        sv.basis + ". Prefix-cached prompt tokens cost nothing on either. Tool-cache hits save agent time, not GPU time, and are not included."));
  }

  // --- caches ------------------------------------------------------------------------------------------------
  function renderCaches(s) {
    const c = s.tool_cache || { tools: {} };
    const usage = s.usage || {};
    let prompt = 0, cached = 0;
    for (const u of Object.values(usage)) { prompt += u.prompt_tokens; cached += u.cached_prompt_tokens; }
    const prefixRate = prompt ? cached / prompt : null;
    const spec = s.speculation;
    const toolRows = Object.entries(c.tools).map(([name, t]) => el("tr", {},
      el("td", {}, name), el("td", { class: "num" }, num("tool_cache.tools." + name + ".calls", t.calls, fmtInt(t.calls))),
      el("td", { class: "num" }, num("tool_cache.tools." + name + ".hits", t.hits, fmtInt(t.hits))),
      el("td", { class: "num" }, fmtPct(t.hit_rate)),
      el("td", { class: "num" }, fmtMs(t.mean_hit_ms)), el("td", { class: "num" }, fmtMs(t.mean_miss_ms))));
    fill("caches",
      el("div", { class: "pair" },
        el("div", {}, el("div", { class: "label" }, "tool cache (sidecars)"), el("div", { class: "big" }, num("tool_cache.hit_rate", c.hit_rate, fmtPct(c.hit_rate)))),
        el("div", {}, el("div", { class: "label" }, "agent time saved (est.)"), el("div", { class: "big" }, num("tool_cache.tool_time_saved_s", c.tool_time_saved_s, fmtDuration(c.tool_time_saved_s)))),
        el("div", {}, el("div", { class: "label" }, "vLLM prefix cache"), el("div", { class: "big" }, num("prefix_cache.hit_rate", prefixRate, fmtPct(prefixRate)))),
        el("div", {}, el("div", { class: "label" }, "speculation"), el("div", { class: "big" },
          spec && spec.enabled ? num("speculation.hit_rate", specRate(spec), fmtPct(specRate(spec))) : el("span", { class: "muted" }, "not enabled")))),
      spec && spec.enabled ? el("dl", { class: "facts" },
        el("dt", {}, "speculative LLM calls"), el("dd", {}, num("speculation.started", spec.started, fmtInt(spec.started)), " started · ",
          num("speculation.served", spec.served, fmtInt(spec.served)), " served · ", fmtInt(spec.mismatched), " not matched · ",
          fmtInt(spec.pending), " pending"),
        el("dt", {}, "agent time saved"), el("dd", {}, num("speculation.time_saved_s", spec.time_saved_s, fmtDuration(spec.time_saved_s))),
        el("dt", {}, "GPU tokens wasted"), el("dd", {}, num("speculation.wasted_tokens", spec.wasted_tokens, fmtInt(spec.wasted_tokens)),
          " (" + fmtInt(spec.wasted_tokens_last_minute) + " in the last minute)")) : null,
      spec && spec.sidecars ? el("dl", { class: "facts" },
        el("dt", {}, "test pre-runs (sidecars)"), el("dd", {},
          num("speculation.test_runs.started", spec.test_runs.started, fmtInt(spec.test_runs.started)), " started · ",
          num("speculation.test_runs.used", spec.test_runs.used, fmtInt(spec.test_runs.used)), " used · ",
          fmtInt(spec.test_runs.cancelled + spec.test_runs.discarded), " cancelled or stale · ",
          num("speculation.test_runs.time_saved_s", spec.test_runs.time_saved_s, fmtDuration(spec.test_runs.time_saved_s)), " saved"),
        el("dt", {}, "next-action prediction"), el("dd", {},
          num("speculation.prediction.top1_rate", spec.prediction.top1_rate, fmtPct(spec.prediction.top1_rate)), " top-1 · ",
          num("speculation.prediction.top3_rate", spec.prediction.top3_rate, fmtPct(spec.prediction.top3_rate)), " top-3 of ",
          num("speculation.prediction.predictions", spec.prediction.predictions, fmtInt(spec.prediction.predictions)), " predictions"),
        spec.early_runs ? el("dt", {}, "tool calls started early (sidecars)") : null,
        spec.early_runs ? el("dd", {},
          num("speculation.early_runs.started", spec.early_runs.started, fmtInt(spec.early_runs.started)), " started · ",
          num("speculation.early_runs.used", spec.early_runs.used, fmtInt(spec.early_runs.used)), " used · ",
          num("speculation.early_runs.wasted", spec.early_runs.wasted, fmtInt(spec.early_runs.wasted)), " wasted · ",
          num("speculation.early_runs.time_saved_s", spec.early_runs.time_saved_s, fmtDuration(spec.early_runs.time_saved_s)), " saved") : null) : null,
      toolRows.length
        ? el("table", { class: "compact" }, el("thead", {}, el("tr", {}, ["tool", "calls", "hits", "hit rate", "hit mean", "miss mean"]
          .map((h, i) => el("th", { class: i ? "num" : "" }, h)))), el("tbody", {}, toolRows))
        : el("p", { class: "muted" }, "no cacheable tool calls reported by sidecars yet"),
      el("p", { class: "note" }, "Tool cache: hits / calls of the sidecars' cacheable tools (read_file, list_dir, search, run_tests). " +
        "Agent time saved = hits × (mean miss time − mean hit time): wall-clock time of the agents, not GPU time. " +
        "Prefix cache: prompt tokens vLLM served from its cache, over all prompt tokens answered. " +
        "Speculation: next LLM calls sent early on spare capacity, served only when the agent's real request is identical; " +
        "it saves agent time and spends GPU tokens on misses. Test pre-runs: the sidecars run the tests on idle CPU when a test run " +
        "is likely next, and answer the agent's run_tests with it only for the exact workspace state it ran on. " +
        "Tool calls started early: while an answer streams, the coordinator has each complete read-only call or test run " +
        "started in the agent's sidecar; the agent's own call takes the result only if a fresh call would return the same."));
  }

  // --- interaction ---------------------------------------------------------------------------------------------
  for (const th of document.querySelectorAll("#agents th")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      if (view.sort === key) view.asc = !view.asc;
      else { view.sort = key; view.asc = key === "agent_id" || key === "stage" || key === "model"; }
      if (lastStatus) renderAgents(lastStatus);
    });
  }
  document.getElementById("agent-filter").addEventListener("input", (e) => {
    view.filter = e.target.value.trim();
    if (lastStatus) renderAgents(lastStatus);
  });
  poll();
})();
