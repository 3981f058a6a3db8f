"use strict";
// faultline pages. Every value from the API is hostile (event-derived strings):
// it reaches the page only as text nodes or checked attributes, never as markup.
// The token is asked once, kept in this tab's sessionStorage and sent as an
// Authorization header; it never goes into a URL.
(function () {
  const KEY = "faultline.token";
  const SVG = "http://www.w3.org/2000/svg";
  const app = document.getElementById("app");
  const page = document.body.getAttribute("data-page");

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const k of kids) {
      if (k === null || k === undefined) continue;
      e.append(k instanceof Node ? k : String(k));
    }
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function token() { try { return sessionStorage.getItem(KEY); } catch (_) { return null; } }
  function safeUrl(u) {
    try { const p = new URL(String(u), location.href); return (p.protocol === "https:" || p.protocol === "http:") ? p.href : null; }
    catch (_) { return null; }
  }
  function pct(x) { return (typeof x === "number" && isFinite(x)) ? (x * 100).toFixed(2) + "%" : "–"; }
  function num(x, d) { return (typeof x === "number" && isFinite(x)) ? x.toFixed(d || 0) : "–"; }
  function badge(text) { return el("span", { class: "badge " + String(text).replace(/[^a-z]/g, "") }, text); }
  function dims(d) {
    const span = el("span", { class: "dims" });
    for (const [k, v] of Object.entries(d || {})) { span.append(el("code", {}, k + "=" + v), " "); }
    return span;
  }

  function showLogin(message) {
    clear(app);
    const input = el("input", { type: "password", id: "token-input", autocomplete: "off", required: "" });
    const form = el("form", { class: "login", id: "login" },
      el("label", {}, "API token (read; write to acknowledge or resolve)", input),
      el("p", {}, el("button", { type: "submit", class: "primary" }, "Use token")),
      el("p", { class: "note" }, "Kept in this browser tab only and sent as an Authorization header; never put in a URL."));
    if (message) form.prepend(el("p", { class: "error" }, message));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      try { sessionStorage.setItem(KEY, t); } catch (_) { /* private mode: ask again next time */ }
      start();
    });
    app.append(form);
    input.focus();
  }

  class ApiError extends Error { constructor(status, message) { super(message); this.status = status; } }

  async function api(path, method) {
    const t = token();
    if (!t) throw new ApiError(401, "");
    const resp = await fetch(path, {
      method: method || "GET",
      headers: { "Authorization": "Bearer " + t, "Accept": "application/json" },
      cache: "no-store", credentials: "omit", redirect: "error",
    });
    let body = null;
    try { body = await resp.json(); } catch (_) { body = null; }
    if (!resp.ok) {
      const m = body && body.error && typeof body.error.message === "string" ? body.error.message : ("HTTP " + resp.status);
      throw new ApiError(resp.status, m);
    }
    return body;
  }

  function fail(e) {
    if (e instanceof ApiError && e.status === 401) {
      try { sessionStorage.removeItem(KEY); } catch (_) { /* ignore */ }
      showLogin(e.message ? "The token was refused: " + e.message : "");
      return;
    }
    clear(app);
    app.append(el("p", { class: "error", id: "error" }, e instanceof Error ? e.message : String(e)));
  }

  const FILTERS = ["status", "severity", "rule", "kind", "provider", "region", "bin", "merchant_id", "since", "until"];

  async function listPage() {
    const params = new URLSearchParams(location.search);
    const q = new URLSearchParams();
    for (const k of FILTERS.concat(["limit", "cursor"])) { const v = params.get(k); if (v) q.set(k, v); }
    const data = await api("/incidents" + (q.toString() ? "?" + q.toString() : ""));
    clear(app);
    const form = el("form", { class: "filters", method: "get", action: "/ui/incidents" });
    for (const k of FILTERS) {
      let input;
      if (k === "status" || k === "severity") {
        const opts = k === "status" ? ["", "open", "acknowledged", "resolved"] : ["", "critical", "warning", "info"];
        input = el("select", { name: k });
        for (const o of opts) input.append(el("option", { value: o }, o || "any"));
      } else {
        input = el("input", { name: k, type: "text", placeholder: (k === "since" || k === "until") ? "RFC 3339" : "" });
      }
      input.value = params.get(k) || "";
      form.append(el("label", {}, k, input));
    }
    form.append(el("button", { type: "submit" }, "Filter"));
    app.append(el("h1", {}, "Incidents"), form);
    const list = el("ul", { class: "cards", id: "incidents" });
    for (const inc of data.incidents || []) {
      const cause = (inc.root_causes && inc.root_causes[0]) || null;
      const a = el("a", { class: "title", href: "/ui/incidents/" + encodeURIComponent(String(inc.id)) }, inc.title || inc.id);
      list.append(el("li", { class: "card" }, a,
        el("div", { class: "meta" }, badge(inc.status), badge(inc.severity), el("span", {}, inc.rule),
          el("span", {}, "opened " + inc.opened_at)),
        cause ? el("div", { class: "meta" }, dims(cause.dims), el("span", {}, pct(cause.failure_rate) + " vs " + pct(cause.baseline_rate))) : null));
    }
    if (!list.firstChild) app.append(el("p", { class: "note" }, "No incidents match."));
    app.append(list);
    if (data.next_cursor) {
      const next = new URLSearchParams(params);
      next.set("cursor", String(data.next_cursor));
      app.append(el("p", { class: "pager" }, el("a", { href: "/ui/incidents?" + next.toString() }, "Older incidents")));
    }
  }

  // Markers: [{at, label}] drawn as vertical lines (began, opened, resolved).
  function chart(series, markers) {
    const pts = (series || []).filter((p) => typeof p.value === "number" && typeof p.baseline === "number" && isFinite(p.value) && isFinite(p.baseline));
    const W = 640, H = 240, L = 56, R = 12, T = 12, B = 28;
    const root = svg("svg", { class: "chart", id: "chart", viewBox: "0 0 " + W + " " + H, role: "img" });
    root.append(svg("title", {}, "Failure rate and baseline per step"));
    if (pts.length === 0) { root.append(svg("text", { x: L, y: H / 2 }, "No series yet")); return root; }
    const times = pts.map((p) => Date.parse(p.at));
    const marks = (markers || []).filter((m) => m && m.at).map((m) => ({ t: Date.parse(m.at), label: m.label })).filter((m) => isFinite(m.t));
    // Start a step or more before the first marker: the "before" to compare with.
    const step = times.length > 1 ? (times[times.length - 1] - times[0]) / (times.length - 1) : 60000;
    const t0 = Math.min(...times, ...marks.map((m) => m.t - step)), t1 = Math.max(...times, ...marks.map((m) => m.t));
    const ymax = Math.max(1e-9, ...pts.map((p) => Math.max(p.value, p.baseline))) * 1.1;
    const x = (t) => L + (t1 === t0 ? (W - L - R) / 2 : (t - t0) / (t1 - t0) * (W - L - R));
    const y = (v) => T + (1 - v / ymax) * (H - T - B);
    const rate = pts.every((p) => p.value <= 1 && p.baseline <= 1);
    const fmt = (v) => rate ? (v * 100).toFixed(v * 100 < 1 ? 2 : 1) + "%" : v.toFixed(0);
    for (const f of [0, 0.5, 1]) {
      const v = ymax * f;
      root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e5e7eb" }));
      root.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6470" }, fmt(v)));
    }
    root.append(svg("text", { x: L, y: H - 8, "font-size": 11, fill: "#5b6470" }, new Date(t0).toISOString().slice(11, 16) + "Z"));
    root.append(svg("text", { x: W - R, y: H - 8, "text-anchor": "end", "font-size": 11, fill: "#5b6470" }, new Date(t1).toISOString().slice(11, 16) + "Z"));
    const line = (key, color, dash, cls) => {
      const d = pts.map((p, i) => x(times[i]).toFixed(1) + "," + y(p[key]).toFixed(1)).join(" ");
      const attrs = { points: d, fill: "none", stroke: color, "stroke-width": 2, class: cls };
      if (dash) attrs["stroke-dasharray"] = "5 4";
      root.append(svg("polyline", attrs));
    };
    // The baseline band: what normal looks like, under the baseline line.
    const band = pts.map((p, i) => x(times[i]).toFixed(1) + "," + y(p.baseline).toFixed(1));
    band.push(x(times[times.length - 1]).toFixed(1) + "," + y(0).toFixed(1), x(times[0]).toFixed(1) + "," + y(0).toFixed(1));
    root.append(svg("polygon", { points: band.join(" "), fill: "#e5e7eb", opacity: 0.6, class: "baseline-band" }));
    for (const m of marks) {
      root.append(svg("line", { x1: x(m.t), x2: x(m.t), y1: T, y2: H - B, stroke: "#1f2937", "stroke-dasharray": "2 3", class: "marker" }));
      root.append(svg("text", { x: x(m.t) + 3, y: T + 10, "font-size": 10, fill: "#1f2937" }, m.label));
    }
    line("baseline", "#6b7280", true, "baseline");
    line("value", "#b42318", false, "rate");
    return root;
  }

  function incidentView(rec) {
    clear(app);
    const canWrite = rec.status !== "resolved";
    const ackBtn = el("button", { type: "button", id: "ack", class: "primary" }, "Acknowledge");
    const resBtn = el("button", { type: "button", id: "resolve" }, "Resolve");
    ackBtn.disabled = rec.status !== "open";
    resBtn.disabled = !canWrite;
    const status = el("p", { class: "note", id: "action-status", "aria-live": "polite" });
    const act = (what, btn) => async () => {
      btn.disabled = true;
      status.textContent = "";
      try {
        const upd = await api("/incidents/" + encodeURIComponent(String(rec.id)) + "/" + what, "POST");
        incidentView(upd);
      } catch (e) {
        btn.disabled = false;
        status.textContent = (e instanceof ApiError && e.status === 403) ? "This token cannot change incidents (needs the write scope)." : (e.message || String(e));
        status.className = "error";
      }
    };
    ackBtn.addEventListener("click", act("ack", ackBtn));
    resBtn.addEventListener("click", act("resolve", resBtn));

    app.append(el("p", {}, el("a", { href: "/ui/incidents" }, "← All incidents")));
    app.append(el("h1", { id: "title" }, rec.title || rec.id));
    app.append(el("div", { class: "meta" }, el("span", { id: "status" }, badge(rec.status)), badge(rec.severity),
      el("span", {}, rec.rule), el("span", {}, rec.kind), el("span", {}, "id " + rec.id)));
    app.append(el("div", { class: "meta" }, el("span", {}, "opened " + rec.opened_at), el("span", {}, "updated " + rec.updated_at),
      rec.resolved_at ? el("span", {}, "resolved " + rec.resolved_at) : null));
    app.append(el("div", { class: "actions" }, ackBtn, resBtn), status);
    app.append(el("h2", {}, "Summary"), el("p", { class: "summary", id: "summary" }, rec.summary || ""));
    app.append(el("h2", {}, "Episode"), episode(rec));

    app.append(el("h2", {}, "Root causes"));
    const table = el("table", { id: "root-causes" },
      el("thead", {}, el("tr", {}, el("th", {}, "element"), el("th", { class: "num" }, "score"), el("th", { class: "num" }, "events"),
        el("th", { class: "num" }, "failures"), el("th", { class: "num" }, "expected"), el("th", { class: "num" }, "rate"), el("th", { class: "num" }, "baseline"))));
    const tb = el("tbody");
    for (const c of rec.root_causes || []) {
      tb.append(el("tr", {}, el("td", {}, dims(c.dims)), el("td", { class: "num" }, num(c.score, 2)), el("td", { class: "num" }, num(c.events)),
        el("td", { class: "num" }, num(c.failures)), el("td", { class: "num" }, num(c.expected_failures, 1)),
        el("td", { class: "num" }, pct(c.failure_rate)), el("td", { class: "num" }, pct(c.baseline_rate))));
    }
    table.append(tb);
    app.append(el("div", { class: "scroll" }, table));

    const markers = [{ at: rec.began_at, label: "began" }, { at: rec.opened_at, label: "opened" }, { at: rec.resolved_at, label: "resolved" }];
    app.append(el("h2", {}, "Failure rate vs baseline"), chart(rec.series, markers),
      el("div", { class: "legend" }, el("span", { class: "rate" }, "observed"), el("span", { class: "baseline" }, "baseline")));

    const links = el("ul", { id: "links" });
    for (const l of rec.links || []) {
      const href = safeUrl(l.url);
      links.append(el("li", {}, href ? el("a", { href: href, rel: "noopener noreferrer", target: "_blank" }, l.title) : el("span", {}, l.title)));
    }
    app.append(el("h2", {}, "Links"), links);

    const tl = el("ol", { class: "timeline", id: "timeline" });
    for (const e of rec.timeline || []) {
      tl.append(el("li", {}, el("strong", {}, e.what), " by " + e.by + " at " + e.at, e.detail ? " — " + e.detail : null));
    }
    app.append(el("h2", {}, "Timeline"), tl);
  }

  // The episode's numbers: began, now, peak, impact, error codes, who acknowledged.
  function episode(rec) {
    const rows = el("dl", { class: "episode", id: "episode" });
    const row = (k, v) => { if (v) rows.append(el("dt", {}, k), el("dd", {}, v)); };
    const reading = (r) => {
      if (!r) return null;
      const at = r.window && r.window.end ? " at " + String(r.window.end).slice(11, 16) + "Z" : "";
      if (typeof r.failure_rate === "number") return pct(r.failure_rate) + " (" + num(r.failures) + " of " + num(r.events) + ", baseline " + pct(r.baseline_rate) + ")" + at;
      if (typeof r.share === "number") return pct(r.share) + " of normal (" + num(r.events) + " of " + num(r.expected_events) + " expected)" + at;
      return null;
    };
    row("began", rec.began_at || null);
    if (rec.status !== "resolved") row("now", reading(rec.current));
    row(rec.peak && typeof rec.peak.share === "number" ? "lowest" : "peak", reading(rec.peak));
    const imp = rec.impact;
    if (imp) {
      row("impact", typeof imp.excess_failures === "number"
        ? num(imp.excess_failures) + " failures beyond normal (" + num(imp.failures) + " of " + num(imp.events) + " failed)"
        : num(imp.missing_events) + " events missing (" + num(imp.events) + " of " + num(imp.expected_events) + ")");
    }
    row("error codes", (rec.error_codes || []).map((c) => c.code + " " + pct(c.share)).join(", ") || null);
    const ack = (rec.timeline || []).filter((e) => e.what === "acknowledged").pop();
    row("acknowledged", ack ? ack.at + " by " + ack.by : null);
    return rows;
  }

  async function incidentPage() {
    const id = document.body.getAttribute("data-incident-id") || "";
    const load = async () => {
      const rec = await api("/incidents/" + encodeURIComponent(id));
      incidentView(rec);
      // While it is open the numbers move: refresh them.
      if (rec.status !== "resolved") setTimeout(() => load().catch(fail), 15000);
    };
    await load();
  }

  function start() {
    if (!token()) { showLogin(""); return; }
    const run = page === "incident" ? incidentPage : listPage;
    run().catch(fail);
  }

  const forget = document.getElementById("forget");
  if (forget) forget.addEventListener("click", () => { try { sessionStorage.removeItem(KEY); } catch (_) { /* ignore */ } showLogin(""); });
  start();
})();
