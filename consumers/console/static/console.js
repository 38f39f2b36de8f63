// busbridge console: plain JS, no build step, no library. Talks to the JSON API of
// consumers/console/server.py and listens to /api/live (server-sent events).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const main = $("#main");
const SEVERITIES = ["debug", "info", "warning", "error", "critical"];
const MAX_FEED_ROWS = 1000;
const RANGES = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 604800, all: 0 };

const ui = {
  view: "issues",
  issues: { state: "unresolved", severity: "", machine: "", q: "", trend: "24h", sort: "last_seen", offset: 0 },
  feed: { machine: "", severity: "", source: "", error_type: "", range: "all", from: "", to: "", q: "", fingerprint: "", live: true },
  facets: { machines: [], sources: [], error_types: [], severities: SEVERITIES },
  drawer: null, // {kind, key}
  seenAlerts: new Set(),
  alertsPrimed: false,
  unseenAlerts: 0,
  status: null,
};
window.__consoleLoadedAt = Date.now();

// ---------------------------------------------------------------- helpers

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function pad(n, w = 2) { return String(n).padStart(w, "0"); }
function fmtTime(epoch) {
  if (epoch == null) return "–";
  const d = new Date(epoch * 1000);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}Z`;
}
function ago(epoch) {
  if (epoch == null) return "–";
  const s = Math.max(0, Date.now() / 1000 - epoch);
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}
function when(epoch) { return `<span title="${esc(fmtTime(epoch))}">${esc(ago(epoch))}</span>`; }
function sev(s) { return `<span class="sev sev-${esc(s)}">${esc(s)}</span>`; }
function pill(text, cls = "") { return `<span class="pill ${esc(cls)}">${esc(text)}</span>`; }
function num(n) { return Number(n || 0).toLocaleString("en-US"); }
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = Number(n || 0), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i ? `${v.toFixed(1)} ${units[i]}` : `${v} B`;
}
function spark(values, w = 120, h = 22, label = "") {
  if (!values || !values.length) return "";
  const max = Math.max(1, ...values), bw = w / values.length;
  const bars = values.map((v, i) => v ? `<rect x="${(i * bw).toFixed(2)}" y="${(h - Math.max(1, (v / max) * h)).toFixed(2)}" width="${Math.max(1, bw - 0.6).toFixed(2)}" height="${Math.max(1, (v / max) * h).toFixed(2)}"/>` : "").join("");
  return `<svg class="spark" width="${w}" height="${h}" role="img" aria-label="${esc(label || `trend, max ${max}`)}">${bars}</svg>`;
}
function chart(values, labels, w = 560, h = 110) {
  const max = Math.max(1, ...values), bw = (w - 30) / Math.max(1, values.length), top = 12, base = h - 16;
  const bars = values.map((v, i) => `<rect x="${(30 + i * bw).toFixed(1)}" y="${(base - (v / max) * (base - top)).toFixed(1)}" width="${Math.max(1, bw - 1).toFixed(1)}" height="${((v / max) * (base - top)).toFixed(1)}"><title>${esc(labels[i])}: ${v}</title></rect>`).join("");
  const ticks = [[0, "start"], [Math.floor(values.length / 2), "middle"], [values.length - 1, "end"]].map(([i, anchor]) => `<text x="${(30 + i * bw + (anchor === "end" ? bw : 0)).toFixed(1)}" y="${h - 3}" text-anchor="${anchor}">${esc(labels[i] || "")}</text>`).join("");
  return `<svg class="chart" width="${w}" height="${h}" role="img" aria-label="events over time, max ${max}"><text x="0" y="${top + 4}">${max}</text><text x="0" y="${base}">0</text>${bars}${ticks}</svg>`;
}
function bucketLabels(n, stepSecs) {
  const now = Math.floor(Date.now() / 1000 / stepSecs) * stepSecs;
  return Array.from({ length: n }, (_, i) => {
    const d = new Date((now - (n - 1 - i) * stepSecs) * 1000);
    return stepSecs >= 86400 ? `${d.getUTCMonth() + 1}-${d.getUTCDate()}` : `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  });
}
async function api(path, opts = {}) {
  const resp = await fetch(path, { headers: { Accept: "application/json" }, ...opts });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || `${resp.status} ${resp.statusText}`);
  return body;
}
function qs(params) {
  return Object.entries(params).filter(([, v]) => v !== "" && v != null).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&");
}
function options(values, selected, anyLabel) {
  return `<option value="">${esc(anyLabel)}</option>` + values.map((v) => `<option value="${esc(v)}"${v === selected ? " selected" : ""}>${esc(v)}</option>`).join("");
}
function debounce(fn, ms) {
  let t = null;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

// A click is a press and a release on the same element. A live re-render between the two
// replaces that element and the click is lost (or lands on the row that moved under the
// pointer), so live re-renders wait while a pointer is pressed and run right after the
// release, once the click has been handled. One pending render per key: the newest wins.
const pressed = { down: false, pending: new Map() };
function whenReleased(key, render) {
  if (pressed.down) pressed.pending.set(key, render); else render();
}
function release() {
  if (!pressed.down) return;
  pressed.down = false;
  setTimeout(() => { // after the click event this release completes
    const renders = [...pressed.pending.values()];
    pressed.pending.clear();
    for (const render of renders) render();
  }, 0);
}
document.addEventListener("pointerdown", () => { pressed.down = true; }, true);
window.addEventListener("pointerup", release, true);
window.addEventListener("pointercancel", release, true);
window.addEventListener("blur", (e) => { if (e.target === window) release(); }); // released elsewhere
function transportLabel(t) {
  const [kind, rest] = String(t).split(":");
  if (kind === "zmq") return `ZMQ ${rest}`;
  if (kind === "nats") return `legacy NATS ${rest}`;
  return rest && rest !== "native" ? `native (${rest} shim)` : "native";
}
function healthPill(h) {
  if (!h) return `<span class="muted">no health entry</span>`;
  if (h.stopped) return pill("stopped", "stopped");
  if (h.stale) return pill(`stale (last ${h.status})`, "stale");
  return pill(h.status, h.status);
}

// ---------------------------------------------------------------- routing

const VIEWS = { issues: renderIssues, feed: renderFeed, agents: renderAgents, agent: renderAgent, floods: renderFloods, dlq: renderDlq, bridges: renderBridges, alerts: renderAlerts };

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const view = VIEWS[parts[0]] ? parts[0] : "issues";
  ui.view = view;
  ui.args = parts.slice(1);
  for (const a of $$("#nav a")) {
    const on = a.dataset.view === view || (view === "agent" && a.dataset.view === "agents");
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (view === "alerts") { ui.unseenAlerts = 0; updateBadge(); }
  VIEWS[view]().catch(showError);
}
function showError(err) {
  main.insertAdjacentHTML("afterbegin", `<div class="empty" role="alert">Could not load: ${esc(err.message || err)}</div>`);
}
window.addEventListener("hashchange", route);

// ---------------------------------------------------------------- issues

async function renderIssues() {
  const f = ui.issues;
  main.innerHTML = `
    <h1>Issues <span class="muted" id="issues-total"></span></h1>
    <form class="bar" id="issues-bar" role="search" onsubmit="return false">
      <label>State <select name="state">${["unresolved", "resolved", "ignored", "all"].map((s) => `<option${s === f.state ? " selected" : ""}>${s}</option>`).join("")}</select></label>
      <label>Severity <select name="severity">${options(SEVERITIES, f.severity, "any")}</select></label>
      <label>Machine <select name="machine">${options(ui.facets.machines, f.machine, "any")}</select></label>
      <label>Search <input type="search" id="q" name="q" value="${esc(f.q)}" placeholder="message, type, source"></label>
      <label>Trend <select name="trend">${["1h", "24h", "7d"].map((s) => `<option${s === f.trend ? " selected" : ""}>${s}</option>`).join("")}</select></label>
      <label>Sort <select name="sort">${[["last_seen", "last seen"], ["first_seen", "first seen"], ["count", "count"], ["severity", "severity"]].map(([v, l]) => `<option value="${v}"${v === f.sort ? " selected" : ""}>${l}</option>`).join("")}</select></label>
    </form>
    <table class="grid" id="issues"><thead><tr>
      <th scope="col">Issue</th><th scope="col">State</th><th scope="col" class="num">Events</th><th scope="col">Trend (${esc(f.trend)})</th>
      <th scope="col">First seen</th><th scope="col">Last seen</th><th scope="col">Machines</th><th scope="col">Agents</th><th scope="col">Severity</th>
    </tr></thead><tbody></tbody></table>
    <div class="more" id="issues-more"></div>`;
  const bar = $("#issues-bar");
  const update = () => {
    const data = new FormData(bar);
    for (const k of ["state", "severity", "machine", "q", "trend", "sort"]) f[k] = data.get(k) || "";
    f.offset = 0;
    $("#issues thead th:nth-child(4)").textContent = `Trend (${f.trend})`;
    loadIssues();
  };
  bar.addEventListener("change", update);
  $("#q").addEventListener("input", debounce(update, 250));
  await loadIssues();
}
async function loadIssues() {
  const f = ui.issues;
  const ticket = (ui.issuesTicket = (ui.issuesTicket || 0) + 1);
  const page = await api(`/api/issues?${qs({ state: f.state, severity: f.severity, machine: f.machine, q: f.q, trend: f.trend, sort: f.sort, limit: 100 + f.offset })}`);
  if (ticket !== ui.issuesTicket) return; // a newer request (other filter, newer data) answers
  whenReleased("issues", () => showIssues(page));
}
function showIssues(page) {
  const f = ui.issues;
  if (ui.view !== "issues") return;
  $("#issues-total").textContent = `${num(page.total)} ${f.state === "all" ? "" : f.state}`;
  const tbody = $("#issues tbody");
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
  tbody.innerHTML = page.rows.map(issueRow).join("") || `<tr><td colspan="9"><div class="empty">No ${esc(f.state === "all" ? "" : f.state)} issues match.</div></td></tr>`;
  bindRows(tbody, (tr) => openIssue(tr.dataset.key));
  if (focused) { const tr = tbody.querySelector(`tr[data-key="${CSS.escape(focused)}"]`); if (tr) tr.focus(); }
  $("#issues-more").innerHTML = page.total > page.rows.length ? `<button class="btn" type="button" id="issues-next">Show more (${num(page.total - page.rows.length)} left)</button>` : "";
  const next = $("#issues-next");
  if (next) next.onclick = () => { f.offset += 100; loadIssues(); };
}
function issueRow(r) {
  const state = r.regression ? pill("regression", "regression") : r.state === "unresolved" ? pill("unresolved") : pill(r.state, r.state);
  const machines = Object.keys(r.machines).join(", ") + (r.machine_count > 8 ? ` +${r.machine_count - 8}` : "");
  // one name per agent: the same agent on two machines (machine/source keys) is listed once
  const agents = [...new Set(Object.keys(r.agents).map((a) => a.split("/")[1]))].join(", ") + (r.agent_count > 8 ? ` +${r.agent_count - 8}` : "");
  return `<tr tabindex="0" data-key="${esc(r.fingerprint)}" data-count="${r.count}" data-state="${esc(r.regression ? "regression" : r.state)}">
    <td><div class="title clip" title="${esc(r.title)}">${esc(r.error_type)}: ${esc(r.title)}</div><div class="sub">${esc(r.source)} · <span class="mono">${esc(r.fingerprint)}</span>${r.note ? ` · “${esc(r.note)}”` : ""}</div></td>
    <td>${state}</td><td class="num count">${num(r.count)}</td><td>${spark(r.trend, 120, 22, `${r.count} events`)}</td>
    <td>${when(r.first_seen)}</td><td>${when(r.last_seen)}</td>
    <td class="clip" style="max-width:120px">${esc(machines)}</td><td class="clip" style="max-width:160px" title="${esc(Object.keys(r.agents).join(", "))}">${esc(agents)}</td><td>${sev(r.severity)}</td></tr>`;
}
async function openIssue(fp) {
  const r = await api(`/api/issues/${encodeURIComponent(fp)}`);
  // a live refresh of the open issue keeps a note being written (and its focus)
  const same = ui.drawer && ui.drawer.kind === "issue" && ui.drawer.key === fp;
  const draft = same ? ($("#note") || {}).value || "" : "";
  const typing = same && document.activeElement && document.activeElement.id === "note" ? [document.activeElement.selectionStart, document.activeElement.selectionEnd] : null;
  const st = r.stored_state;
  const history = st ? [{ state: st.state, note: st.note, by: st.by, at: st.at, regression: st.regression }, ...(st.history || [])] : [];
  const state = r.regression ? pill("regression", "regression") : pill(r.state, r.state === "unresolved" ? "" : r.state);
  openDrawer("issue", fp, `${r.error_type}: ${r.title}`, `
    <dl class="kv">
      <dt>State</dt><dd>${state}</dd>
      <dt>Events</dt><dd>${num(r.count)}</dd>
      <dt>Severity</dt><dd>${sev(r.severity)}</dd>
      <dt>Source</dt><dd>${esc(r.source)}</dd>
      <dt>First seen</dt><dd>${esc(fmtTime(r.first_seen))}</dd>
      <dt>Last seen</dt><dd>${esc(fmtTime(r.last_seen))} (seq ${r.last_seq})</dd>
      <dt>Fingerprint</dt><dd class="mono">${esc(r.fingerprint)}</dd>
      <dt>Machines</dt><dd>${Object.entries(r.machines).map(([k, v]) => `${esc(k)} (${num(v)})`).join(", ")}</dd>
      <dt>Agents</dt><dd>${Object.entries(r.agents).map(([k, v]) => `<a href="#/agent/${k.split("/").map(encodeURIComponent).join("/")}">${esc(k)}</a> (${num(v)})`).join(", ")}</dd>
    </dl>
    <h3>Last 24 h</h3>${chart(r.trend, bucketLabels(24, 3600), 520, 90)}
    <h3>Last hour</h3>${chart(r.trend_1h, bucketLabels(60, 60), 520, 90)}
    <div class="actions" role="group" aria-label="Change state">
      <textarea id="note" placeholder="Note (why, ticket, who)" aria-label="Note">${esc(draft)}</textarea>
      <input id="by" class="mono" placeholder="your name" aria-label="Your name" value="${esc(localStorage.getItem("busbridge.by") || "")}">
      <button type="button" class="btn primary" data-state="resolved" id="btn-resolve"${r.state === "resolved" && !r.regression ? " disabled" : ""}>Resolve <kbd>r</kbd></button>
      <button type="button" class="btn" data-state="ignored" id="btn-ignore"${r.state === "ignored" ? " disabled" : ""}>Ignore <kbd>i</kbd></button>
      <button type="button" class="btn" data-state="unresolved" id="btn-reopen"${r.state === "unresolved" ? " disabled" : ""}>Reopen <kbd>u</kbd></button>
    </div>
    <h3>History</h3>
    ${history.length ? `<table class="grid" id="history"><thead><tr><th>When</th><th>State</th><th>By</th><th>Note</th></tr></thead><tbody>${history.map((h) => `<tr><td>${esc(fmtTime(h.at))}</td><td>${h.regression ? pill("regression", "regression") : pill(h.state, h.state)}</td><td>${esc(h.by || "")}</td><td>${esc(h.note || "")}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">No decision yet.</p>`}
    <h3>Newest events <a href="#/feed" id="issue-feed">(all in the feed)</a></h3>
    <table class="grid"><thead><tr><th>Time</th><th>Machine</th><th>Agent</th><th>Message</th></tr></thead><tbody id="issue-events">${r.events.map((e) => `<tr tabindex="0" data-key="${e.seq}"><td>${esc(fmtTime(e.at))}</td><td>${esc(e.machine)}</td><td>${esc(e.source)}</td><td class="clip" style="max-width:220px">${esc(e.message)}</td></tr>`).join("")}</tbody></table>`);
  if (typing) { $("#note").focus(); $("#note").setSelectionRange(...typing); }
  for (const b of $$(".actions button[data-state]")) b.onclick = () => setState(fp, b.dataset.state);
  bindRows($("#issue-events"), (tr) => openEvent(Number(tr.dataset.key)));
  $("#issue-feed").onclick = (e) => { e.preventDefault(); Object.assign(ui.feed, { machine: "", severity: "", source: "", error_type: "", range: "all", q: "", fingerprint: fp }); location.hash = "#/feed"; };
}
async function setState(fp, state) {
  const by = ($("#by") || {}).value || "";
  localStorage.setItem("busbridge.by", by);
  await api(`/api/issues/${encodeURIComponent(fp)}/state`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ state, note: ($("#note") || {}).value || "", by }) });
  if ($("#note")) $("#note").value = ""; // written into the history now
  await openIssue(fp);
  if (ui.view === "issues") loadIssues();
}

// ---------------------------------------------------------------- live feed

function feedFilter() {
  const f = ui.feed;
  const now = Date.now() / 1000;
  let since = "", until = "";
  if (f.range === "custom") {
    since = f.from ? Date.parse(f.from + "Z") / 1000 : "";
    until = f.to ? Date.parse(f.to + "Z") / 1000 : "";
  } else if (RANGES[f.range]) since = now - RANGES[f.range];
  return { machine: f.machine, severity: f.severity, source: f.source, error_type: f.error_type, fingerprint: f.fingerprint, since, until, q: f.q.trim() };
}
function feedMatches(row, p) {
  if (p.machine && row.machine !== p.machine) return false;
  if (p.severity && row.severity !== p.severity) return false;
  if (p.source && row.source !== p.source) return false;
  if (p.error_type && row.error_type !== p.error_type) return false;
  if (p.fingerprint && row.fingerprint !== p.fingerprint) return false;
  if (p.since !== "" && row.at < p.since) return false;
  if (p.until !== "" && row.at > p.until) return false;
  if (p.q) {
    const q = p.q.toLowerCase();
    if (!(row.message.toLowerCase().includes(q) || row.error_type.toLowerCase().includes(q) || row.source.toLowerCase().includes(q) || row.machine.toLowerCase().includes(q) || row.fingerprint === p.q)) return false;
  }
  return true;
}
async function renderFeed() {
  const f = ui.feed;
  main.innerHTML = `
    <h1>Live feed <span class="muted" id="feed-count"></span></h1>
    <form class="bar" id="feed-bar" role="search" onsubmit="return false">
      <label>Machine <select name="machine">${options(ui.facets.machines, f.machine, "any")}</select></label>
      <label>Severity <select name="severity">${options(SEVERITIES, f.severity, "any")}</select></label>
      <label>Source <select name="source">${options(ui.facets.sources, f.source, "any")}</select></label>
      <label>Error type <select name="error_type">${options(ui.facets.error_types, f.error_type, "any")}</select></label>
      <label>Time <select name="range">${[["15m", "last 15 min"], ["1h", "last hour"], ["24h", "last 24 h"], ["7d", "last 7 days"], ["all", "everything loaded"], ["custom", "from … to (UTC)"]].map(([v, l]) => `<option value="${v}"${v === f.range ? " selected" : ""}>${l}</option>`).join("")}</select></label>
      <span id="custom-range"${f.range === "custom" ? "" : " hidden"}><input type="datetime-local" step="1" name="from" aria-label="from (UTC)" value="${esc(f.from)}"> – <input type="datetime-local" step="1" name="to" aria-label="to (UTC)" value="${esc(f.to)}"></span>
      <label>Search <input type="search" id="q" name="q" value="${esc(f.q)}" placeholder="text in the loaded range"></label>
      ${f.fingerprint ? `<span class="pill">issue <span class="mono">${esc(f.fingerprint)}</span> <button type="button" class="btn" id="clear-fp" aria-label="clear issue filter">✕</button></span>` : ""}
      <span class="grow"></span>
      <label><input type="checkbox" name="live" id="live"${f.live ? " checked" : ""}> live</label>
    </form>
    <table class="grid" id="feed"><thead><tr><th scope="col">Received</th><th scope="col">Machine</th><th scope="col">Severity</th><th scope="col">Source</th><th scope="col">Error type</th><th scope="col">Message</th><th scope="col">Transport</th></tr></thead><tbody></tbody></table>
    <div class="more" id="feed-more"></div>`;
  const bar = $("#feed-bar");
  const update = () => {
    const data = new FormData(bar);
    for (const k of ["machine", "severity", "source", "error_type", "range", "from", "to", "q"]) f[k] = data.get(k) || "";
    f.live = $("#live").checked;
    $("#custom-range").hidden = f.range !== "custom";
    loadFeed();
  };
  bar.addEventListener("change", update);
  $("#q").addEventListener("input", debounce(update, 250));
  const clear = $("#clear-fp");
  if (clear) clear.onclick = () => { f.fingerprint = ""; renderFeed(); };
  await loadFeed();
}
async function loadFeed(beforeSeq) {
  const p = feedFilter();
  const page = await api(`/api/events?${qs({ ...p, before_seq: beforeSeq, limit: 100 })}`);
  if (ui.view !== "feed") return;
  const tbody = $("#feed tbody");
  const html = page.rows.map((r) => feedRow(r)).join("");
  if (beforeSeq) tbody.insertAdjacentHTML("beforeend", html); else tbody.innerHTML = html;
  if (!beforeSeq && ui.feed.live && ui.recent) { // pushed while the page was on its way
    const top = page.rows.length ? page.rows[0].seq : 0;
    const missed = ui.recent.filter((r) => r.seq > top && feedMatches(r, p));
    if (missed.length) tbody.insertAdjacentHTML("afterbegin", missed.reverse().map((r) => feedRow(r, true)).join(""));
  }
  if (!tbody.children.length) tbody.innerHTML = `<tr class="none"><td colspan="7"><div class="empty">No events match.</div></td></tr>`;
  bindRows(tbody, (tr) => openEvent(Number(tr.dataset.key)));
  $("#feed-count").textContent = `${num($$("#feed tbody tr[data-key]").length)} shown`;
  $("#feed-more").innerHTML = page.next_before_seq ? `<button class="btn" type="button" id="feed-older">Load older</button>` : `<span class="muted">start of the loaded range</span>`;
  const older = $("#feed-older");
  if (older) older.onclick = () => loadFeed(page.next_before_seq);
}
function feedRow(r, fresh = false) {
  return `<tr tabindex="0" data-key="${r.seq}"${fresh ? ' class="fresh"' : ""}><td class="mono">${esc(fmtTime(r.at))}</td><td>${esc(r.machine)}</td><td>${sev(r.severity)}</td><td>${esc(r.source)}</td><td>${esc(r.error_type)}</td><td class="clip msg" title="${esc(r.message)}">${esc(r.message)}</td><td class="sub">${esc(transportLabel(r.transport))}</td></tr>`;
}
function liveFeed(rows) {
  ui.recent = (ui.recent || []).concat(rows).slice(-500);
  if (rows.length) whenReleased("feed", showRecent);
}
function showRecent() { // the pushed rows newer than the feed's top row
  const rows = ui.recent || [];
  if (ui.view !== "feed" || !ui.feed.live || !rows.length) return;
  const p = feedFilter();
  const tbody = $("#feed tbody");
  const top = tbody.querySelector("tr[data-key]");
  const topSeq = top ? Number(top.dataset.key) : 0;
  const fresh = rows.filter((r) => r.seq > topSeq && feedMatches(r, p)).reverse();
  if (!fresh.length) return;
  const none = tbody.querySelector("tr.none");
  if (none) none.remove();
  tbody.insertAdjacentHTML("afterbegin", fresh.map((r) => feedRow(r, true)).join(""));
  while (tbody.children.length > MAX_FEED_ROWS) tbody.lastElementChild.remove();
  bindRows(tbody, (tr) => openEvent(Number(tr.dataset.key)));
  $("#feed-count").textContent = `${num(tbody.children.length)} shown`;
}
async function openEvent(seq) {
  const d = await api(`/api/events/${seq}`);
  const c = d.contract || {};
  const legacy = d.legacy;
  openDrawer("event", String(seq), `${c.error_type || c.type}: ${c.message || ""}`, `
    <dl class="kv">
      <dt>Stream seq</dt><dd>${seq}</dd><dt>Subject</dt><dd class="mono">${esc(d.subject)}</dd>
      <dt>Severity</dt><dd>${c.severity ? sev(c.severity) : "–"}</dd>
      <dt>Machine</dt><dd>${esc(c.machine)}</dd><dt>Source</dt><dd><a href="#/agent/${encodeURIComponent(c.machine)}/${encodeURIComponent(c.source)}">${esc(c.source)}</a></dd>
      <dt>Occurred</dt><dd>${esc(c.occurred_at || "–")}</dd><dt>Received</dt><dd>${esc(c.received_at)}</dd>
      <dt>Transport</dt><dd>${d.row ? esc(transportLabel(d.row.transport)) : "–"}</dd>
      <dt>Fingerprint</dt><dd class="mono"><a href="#" id="to-issue">${esc(c.fingerprint)}</a></dd>
    </dl>
    <h3>Raw legacy fields</h3>
    ${legacy ? `<table class="grid" id="legacy"><tbody>${Object.entries(legacy).map(([k, v]) => `<tr><th scope="row" class="mono">${esc(k)}</th><td class="mono">${esc(typeof v === "string" ? v : JSON.stringify(v))}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">none: a native event (legacy is null)</p>`}
    <h3>Headers</h3><pre class="wrap">${esc(Object.entries(d.headers).map(([k, v]) => `${k}: ${v}`).join("\n"))}</pre>
    <h3>Contract (as stored)</h3><pre id="contract">${esc(JSON.stringify(c, null, 2))}</pre>`);
  $("#to-issue").onclick = (e) => { e.preventDefault(); if (c.fingerprint) openIssue(c.fingerprint); };
}

// ---------------------------------------------------------------- agents

async function renderAgents() {
  const data = await api(`/api/agents?trend=24h`);
  if (ui.view !== "agents") return;
  main.innerHTML = `<h1>Agents <span class="muted">${num(data.rows.length)}</span></h1>
    <table class="grid" id="agents"><thead><tr><th scope="col">Agent</th><th scope="col">Health</th><th scope="col">Transport</th><th scope="col" class="num">Events</th><th scope="col">Last 24 h</th><th scope="col">Last error</th></tr></thead>
    <tbody>${data.rows.map((a) => `<tr tabindex="0" data-key="${esc(a.key)}">
      <td><div class="title">${esc(a.source)}</div><div class="sub">${esc(a.machine)}</div></td>
      <td>${healthPill(a.health)}</td>
      <td class="sub">${Object.entries(a.transports).map(([t, n]) => `${esc(transportLabel(t))} (${num(n)})`).join("<br>") || "–"}</td>
      <td class="num">${num(a.count)}</td><td>${spark(a.trend)}</td>
      <td>${a.last ? `${when(a.last.at)} ${sev(a.last.severity)} <span class="clip" style="display:inline-block;max-width:360px;vertical-align:bottom">${esc(a.last.error_type)}: ${esc(a.last.message)}</span>` : "–"}</td></tr>`).join("") || `<tr><td colspan="6"><div class="empty">No agent has reported an error yet.</div></td></tr>`}</tbody></table>`;
  bindRows($("#agents tbody"), (tr) => { location.hash = `#/agent/${tr.dataset.key.split("/").map(encodeURIComponent).join("/")}`; });
}
async function renderAgent() {
  const [machine, source] = ui.args;
  const a = await api(`/api/agents/${encodeURIComponent(machine)}/${encodeURIComponent(source)}`);
  if (ui.view !== "agent") return;
  const h = a.health;
  main.innerHTML = `<p><a href="#/agents">← Agents</a></p><h1>${esc(source)} <span class="muted">on ${esc(machine)}</span></h1>
    <div class="split">
      <div class="card"><h2>Health</h2>${h ? `<dl class="kv"><dt>Status</dt><dd>${healthPill(h)}</dd><dt>Detail</dt><dd>${esc(h.detail)}</dd><dt>Checked</dt><dd>${esc(Math.round(h.age_secs))} s ago (every ${esc(h.interval_secs)} s)</dd></dl>` : `<p class="muted">No health entry in the health KV for this agent (not probed by its bridge).</p>`}
        <h2>Transport</h2><dl class="kv">${Object.entries(a.transports).map(([t, n]) => `<dt>${esc(transportLabel(t))}</dt><dd>${num(n)} events</dd>`).join("")}</dl>
        <h2>Severities</h2><dl class="kv">${Object.entries(a.severities).map(([s, n]) => `<dt>${sev(s)}</dt><dd>${num(n)}</dd>`).join("")}</dl></div>
      <div class="card"><h2>Last error</h2>${a.last ? `<dl class="kv"><dt>Received</dt><dd>${esc(fmtTime(a.last.at))} (${esc(ago(a.last.at))})</dd><dt>Severity</dt><dd>${sev(a.last.severity)}</dd><dt>Type</dt><dd>${esc(a.last.error_type)}</dd><dt>Message</dt><dd>${esc(a.last.message)}</dd></dl><button class="btn" type="button" id="last-open">Open the event</button>` : "–"}
        <h2>Events: ${num(a.count)}</h2></div>
    </div>
    <h2>Errors per minute, last hour</h2>${chart(a.trend_1h, bucketLabels(60, 60), 1100, 110)}
    <h2>Errors per hour, last 24 h</h2>${chart(a.trend, bucketLabels(24, 3600), 1100, 110)}
    <h2>Errors per day, last 7 days</h2>${chart(a.trend_7d, bucketLabels(7, 86400), 1100, 90)}
    <h2>Newest events</h2>
    <table class="grid"><thead><tr><th>Received</th><th>Severity</th><th>Error type</th><th>Message</th><th>Transport</th></tr></thead><tbody id="agent-events">${a.events.map((r) => `<tr tabindex="0" data-key="${r.seq}"><td class="mono">${esc(fmtTime(r.at))}</td><td>${sev(r.severity)}</td><td>${esc(r.error_type)}</td><td class="clip">${esc(r.message)}</td><td class="sub">${esc(transportLabel(r.transport))}</td></tr>`).join("")}</tbody></table>`;
  bindRows($("#agent-events"), (tr) => openEvent(Number(tr.dataset.key)));
  const last = $("#last-open");
  if (last) last.onclick = () => openEvent(a.last.seq);
}

// ---------------------------------------------------------------- floods

async function renderFloods() {
  const d = await api("/api/floods");
  if (ui.view !== "floods") return;
  const row = (f) => `<tr tabindex="0" data-key="${esc(f.key)}">
    <td><div class="title">${esc(f.source)}</div><div class="sub">${esc(f.machine)}</div></td><td>${esc(f.error_type)}</td><td>${esc(f.rule)}<div class="sub">${esc(f.threshold)} / ${esc(f.window_secs)} s</div></td><td>${sev(f.severity)}</td>
    <td>${when(f.started_at)}</td>${f.active ? "" : `<td>${when(f.ended_at)}</td>`}<td class="num suppressed">${num(f.suppressed_total)}</td>
    <td>${spark(f.summaries.map((s) => s.suppressed), 100, 20, "suppressed per summary")}<div class="sub">${f.summaries.length} summaries</div></td>
    <td class="clip" style="max-width:280px" title="${esc(f.sample)}">${esc(f.sample)}</td></tr>`;
  const head = (active) => `<thead><tr><th>Agent</th><th>Error type</th><th>Rule</th><th>Severity</th><th>Started</th>${active ? "" : "<th>Ended</th>"}<th class="num">Suppressed</th><th>Summaries</th><th>Sample</th></tr></thead>`;
  main.innerHTML = `<h1>Floods</h1>
    <h2>Active <span class="pill active">${d.active.length}</span></h2>
    ${d.active.length ? `<table class="grid" id="floods-active">${head(true)}<tbody>${d.active.map(row).join("")}</tbody></table>` : `<div class="empty">No active flood.</div>`}
    <h2>Ended</h2>
    ${d.ended.length ? `<table class="grid" id="floods-ended">${head(false)}<tbody>${d.ended.map(row).join("")}</tbody></table>` : `<div class="empty">No flood has ended in the loaded range.</div>`}`;
  const all = [...d.active, ...d.ended];
  for (const tb of $$("#main tbody")) bindRows(tb, (tr) => openFlood(all.find((f) => f.key === tr.dataset.key)));
}
function openFlood(f) {
  if (!f) return;
  openDrawer("flood", f.key, `Flood: ${f.source} ${f.error_type}`, `
    <dl class="kv"><dt>State</dt><dd>${f.active ? pill("active", "active") : pill("ended")}</dd><dt>Machine</dt><dd>${esc(f.machine)}</dd><dt>Rule</dt><dd>${esc(f.rule)} (${esc(f.threshold)} per ${esc(f.window_secs)} s pass)</dd>
    <dt>Started</dt><dd>${esc(fmtTime(f.started_at))}</dd><dt>Ended</dt><dd>${esc(f.ended_at ? fmtTime(f.ended_at) : "–")}</dd><dt>Suppressed</dt><dd>${num(f.suppressed_total)}</dd><dt>Fingerprint</dt><dd class="mono">${esc(f.fingerprint)}</dd></dl>
    <h3>Suppressed per summary</h3>${chart(f.summaries.map((s) => s.suppressed), f.summaries.map((s) => fmtTime(s.last_seen).slice(11)), 520, 100)}
    <h3>Summaries</h3><table class="grid"><thead><tr><th>Last seen</th><th class="num">Suppressed</th><th class="num">Total</th><th>Sample</th></tr></thead><tbody>${f.summaries.slice().reverse().map((s) => `<tr><td>${esc(fmtTime(s.last_seen))}</td><td class="num">${num(s.suppressed)}</td><td class="num">${num(s.suppressed_total)}</td><td class="clip" style="max-width:200px">${esc(s.sample)}</td></tr>`).join("")}</tbody></table>
    <h3>Sample</h3><pre class="wrap">${esc(f.sample)}</pre>`);
}

// ---------------------------------------------------------------- dead letters

async function renderDlq() {
  const d = await api("/api/dead-letters?limit=200");
  if (ui.view !== "dlq") return;
  main.innerHTML = `<h1>Dead letters <span class="muted">${num(d.total)}${d.suppressed ? ` stored · ${num(d.suppressed)} more suppressed in summaries` : ""}</span></h1>
    <table class="grid" id="dlq"><thead><tr><th>Received</th><th>Machine</th><th>Reason</th><th>Dialect guess</th><th>Frames (bytes)</th><th>Detail</th><th>Start of frame 1</th></tr></thead><tbody>${d.rows.map((r) => dlqRow(r)).join("")}</tbody></table>
    ${d.rows.length ? "" : `<div class="empty">No dead letters in the loaded range.</div>`}`;
  bindRows($("#dlq tbody"), (tr) => openDeadLetter(Number(tr.dataset.key)));
  showRecentDead(); // pushed while the page was on its way
}
function showRecentDead() { // the pushed dead letters newer than the list's top row
  const tbody = ui.view === "dlq" ? $("#dlq tbody") : null;
  if (!tbody) return;
  const top = tbody.querySelector("tr[data-key]");
  const topSeq = top ? Number(top.dataset.key) : 0;
  const fresh = (ui.recentDead || []).filter((r) => r.seq > topSeq).reverse();
  if (!fresh.length) return;
  const none = $("#dlq + .empty");
  if (none) none.remove();
  tbody.insertAdjacentHTML("afterbegin", fresh.map((r) => dlqRow(r, true)).join(""));
  bindRows(tbody, (tr) => openDeadLetter(Number(tr.dataset.key)));
}
function dlqRow(r, fresh = false) {
  return `<tr tabindex="0" data-key="${r.seq}"${fresh ? ' class="fresh"' : ""}><td class="mono">${esc(fmtTime(r.at))}</td><td>${esc(r.machine)}</td><td>${pill(r.reason)}${r.suppressed ? ` <span class="pill suppressed">+${num(r.suppressed)} suppressed</span>` : ""}</td><td>${esc(r.dialect_guess || "–")}</td><td class="mono">${esc(r.frame_sizes.join(", "))}${r.truncated ? " ✂" : ""}</td><td class="clip" style="max-width:220px" title="${esc(r.detail)}">${esc(r.detail)}</td><td class="mono clip" style="max-width:260px">${esc(r.preview)}</td></tr>`;
}
async function openDeadLetter(seq) {
  const d = await api(`/api/dead-letters/${seq}`);
  const sm = d.summary;
  openDrawer("dlq", String(seq), sm ? `Dead-letter summary: ${d.reason}` : `Dead letter: ${d.reason}`, `
    ${sm ? `<dl class="kv summary"><dt>Suppressed</dt><dd>${num(sm.suppressed)} in this summary · ${num(sm.suppressed_total)} since ${esc(fmtTime(sm.first_seen))}${sm.ended ? " · storm ended" : ""}</dd>
    <dt>Key</dt><dd class="mono">${esc(sm.key)}</dd><dt>Rule</dt><dd>first ${esc(sm.threshold)} per ${esc(sm.window_secs)} s stored with their bytes</dd><dt>Last seen</dt><dd>${esc(fmtTime(sm.last_seen))}</dd></dl><h3>Sample (the last one suppressed)</h3>` : ""}
    <dl class="kv"><dt>Reason</dt><dd>${pill(d.reason)}</dd><dt>Detail</dt><dd>${esc(d.detail)}</dd><dt>Dialect guess</dt><dd>${esc(d.dialect_guess || "none")}</dd>
    <dt>Machine</dt><dd>${esc(d.machine)}</dd><dt>Received</dt><dd>${esc(fmtTime(d.received_at))}</dd><dt>Event id</dt><dd class="mono">${esc(d.event_id)}</dd><dt>Subject</dt><dd class="mono">${esc(d.subject)}</dd>
    ${d.truncated ? `<dt>Truncated</dt><dd>${esc(JSON.stringify(d.truncated))}</dd>` : ""}</dl>
    ${d.frames.map((f, i) => `<h3>Frame ${i + 1}: ${num(f.size)} bytes${f.kept !== f.size ? ` (${num(f.kept)} kept)` : ""}</h3>
      <div class="sub">hex</div><pre class="hex" id="frame-${i}-hex">${esc(f.hex.join("\n"))}</pre>
      <div class="sub">text (UTF-8, other bytes as \\xNN)</div><pre class="wrap text" id="frame-${i}-text">${esc(f.text)}</pre>`).join("")}`);
}

// ---------------------------------------------------------------- bridges

async function renderBridges() {
  const d = await api("/api/bridges");
  if (ui.view !== "bridges") return;
  const guards = (gs) => gs && gs.length ? `<table class="grid"><thead><tr><th>Guard</th><th>Passed</th><th>Observed</th><th>Required</th><th>Detail</th></tr></thead><tbody>${gs.map((g) => `<tr><td>${esc(g.name)}</td><td>${g.passed ? "✔" : "✘"}</td><td class="num">${esc(g.observed ?? "–")}</td><td class="num">${esc(g.required)}</td><td>${esc(g.detail)}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">No guard results reported.</p>`;
  const card = (b) => {
    const hb = b.report || {};
    const ps = b.phase_status;
    const pc = b.phase_changed;
    const parity = (ps && (ps.guards || []).find((g) => g.name === "parity")) || (pc && (pc.guards || []).find((g) => g.name === "parity"));
    return `<section class="card bridge" data-key="${esc(b.key)}"><h2>${esc(b.machine)} <span class="muted">${esc(b.name)}</span> ${healthPill(b)}</h2>
      <dl class="kv">
        <dt>Phase</dt><dd class="phase"><b>${esc(hb.phase || "?")}</b>${ps ? ` · last request ${esc(ps.requested)}: ${esc(ps.result)}${ps.reason ? ` (${esc(ps.reason)})` : ""}` : ""}</dd>
        <dt>Readiness</dt><dd>${hb.not_ready_reasons && hb.not_ready_reasons.length ? `not ready: ${esc(hb.not_ready_reasons.join(", "))}` : "ready"}</dd>
        <dt>Parity</dt><dd>${parity ? `${esc(parity.detail)}` : `<span class="muted">not reported (phase ${esc(hb.phase || "?")})</span>`}</dd>
        <dt>Spool backlog</dt><dd>${num(hb.spool_messages)} messages, ${esc(bytes(hb.spool_bytes))}</dd>
        <dt>NATS</dt><dd>${hb.nats_connected ? "connected" : "disconnected"}, ${num(hb.nats_reconnects)} reconnects</dd>
        <dt>ZMQ publishers</dt><dd>${num(hb.zmq_publishers_connected)}</dd>
        <dt>Rates</dt><dd>in ${esc(hb.received_per_sec)}/s · stored ${esc(hb.stored_per_sec)}/s · dead letters ${esc(hb.dead_lettered_per_sec)}/s · dropped ${esc(hb.dropped_per_sec)}/s</dd>
        <dt>Heartbeat</dt><dd>${esc(Math.round(b.age_secs))} s ago, every ${esc(b.interval_secs)} s · v${esc(hb.version)} · ${num(hb.agents_probed)} agents probed</dd>
        ${pc ? `<dt>Last change</dt><dd>${esc(pc.from_phase)} → ${esc(pc.to_phase)} by ${esc(pc.by)}${pc.forced ? " (forced)" : ""} at ${esc(pc.changed_at)}</dd>` : ""}
        ${b.spool_evicted ? `<dt>Spool evicted</dt><dd>${esc(JSON.stringify(b.spool_evicted.by_severity))} at ${esc(b.spool_evicted.last_evicted_at)}</dd>` : ""}
      </dl>
      ${ps ? `<h3>Guards of the last request</h3>${guards(ps.guards)}` : ""}</section>`;
  };
  const requests = d.phase.filter((e) => !e.key.startsWith("status."));
  main.innerHTML = `<h1>Bridges <span class="muted">${num(d.bridges.length)}</span></h1>
    ${d.problems.map((p) => `<div class="empty">${esc(p)}</div>`).join("")}
    <div class="cards">${d.bridges.map(card).join("") || `<div class="empty">No bridge heartbeat in the health KV (is health enabled on the bridges?).</div>`}</div>
    <h2>Phase requests (KV)</h2>
    ${requests.length ? `<table class="grid"><thead><tr><th>Key</th><th>Phase</th><th>Forced</th><th>By</th><th>At</th></tr></thead><tbody>${requests.map((e) => `<tr><td class="mono">${esc(e.key)}</td><td>${esc((e.value || {}).phase)}</td><td>${(e.value || {}).force ? "yes" : "no"}</td><td>${esc((e.value || {}).by)}</td><td>${esc((e.value || {}).at)}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">No phase request in the phase KV.</p>`}
    <h2>Fleet heartbeats</h2>
    <table class="grid" id="heartbeats"><thead><tr><th>Machine</th><th>Kind</th><th>Name</th><th>Status</th><th class="num">Age</th><th>Detail</th></tr></thead>
    <tbody>${d.entries.map((e) => `<tr><td>${esc(e.machine)}</td><td>${esc(e.kind)}</td><td>${esc(e.name)}</td><td>${healthPill(e)}</td><td class="num">${esc(Math.round(e.age_secs))} s</td><td class="sub">${esc(e.detail)}</td></tr>`).join("") || `<tr><td colspan="6"><div class="empty">The health KV is empty.</div></td></tr>`}</tbody></table>`;
}

// ---------------------------------------------------------------- alerts

async function renderAlerts() {
  const d = await api("/api/alerts");
  if (ui.view !== "alerts") return;
  main.innerHTML = `<h1>Alerts <span class="muted">${num(d.alerts.length)}</span></h1>
    <table class="grid" id="alerts"><thead><tr><th>Fired</th><th>Rule</th><th>Summary</th><th>Agent</th><th class="num">Count</th><th>Fired by</th><th>Webhook</th></tr></thead>
    <tbody>${d.alerts.map((a) => `<tr tabindex="0" data-key="${esc(a.fingerprint)}" data-rule="${esc(a.rule)}"><td class="mono">${esc(a.fired_at.replace("T", " ").slice(0, 19))}Z</td><td>${pill(a.rule, a.kind === "regression" ? "regression" : "")}</td><td class="clip" style="max-width:460px" title="${esc(a.summary)}">${sev(a.severity)} ${esc(a.summary)}</td><td>${esc(a.machine)}/${esc(a.source)}</td><td class="num">${a.count ? num(a.count) : ""}</td><td class="sub">${esc(a.fired_by)}</td><td class="sub">${esc(a.webhook || (d.webhooks.length ? "(sent by the firing console)" : "none configured"))}</td></tr>`).join("") || `<tr><td colspan="7"><div class="empty">No alert has fired.</div></td></tr>`}</tbody></table>
    <h2>Rules</h2>
    <p class="muted">Evaluated by every console over the same stream; each alert fires once per fleet (claimed in KV bucket <span class="mono">${esc(d.kv_bucket)}</span>), is published on <span class="mono">errbus.alert.&lt;rule&gt;</span> and POSTed to ${d.webhooks.length ? d.webhooks.map((w) => `<span class="mono">${esc(w)}</span>`).join(", ") : "no webhook"}. This console fired ${num(d.fired_here)}.</p>
    <table class="grid" id="rules"><thead><tr><th>Name</th><th>Kind</th><th class="num">More than</th><th class="num">Window</th><th>Min severity</th><th class="num">Cooldown</th><th>Webhook</th><th>Enabled</th></tr></thead>
    <tbody>${d.rules.map((r) => `<tr><td>${esc(r.name)}</td><td>${esc(r.kind)}</td><td class="num">${r.kind.endsWith("frequency") ? esc(r.threshold) : "–"}</td><td class="num">${r.kind.endsWith("frequency") ? `${esc(r.window_secs)} s` : "–"}</td><td>${esc(r.min_severity || "–")}</td><td class="num">${esc(r.cooldown_secs)} s</td><td>${r.webhook ? "yes" : "no"}</td><td>${r.enabled ? "yes" : "no"}</td></tr>`).join("")}</tbody></table>`;
  bindRows($("#alerts tbody"), (tr) => { if (tr.dataset.key) openIssue(tr.dataset.key); });
}
async function checkAlerts() {
  const d = await api("/api/alerts");
  const fresh = d.alerts.filter((a) => !ui.seenAlerts.has(a.alert_id));
  for (const a of d.alerts) ui.seenAlerts.add(a.alert_id);
  if (!ui.alertsPrimed) { ui.alertsPrimed = true; return; }
  for (const a of fresh.slice(0, 3)) toast(`<b>${esc(a.rule)}</b> ${esc(a.summary)}`);
  if (ui.view !== "alerts") { ui.unseenAlerts += fresh.length; updateBadge(); } else renderAlerts();
}
function updateBadge() {
  const b = $("#alert-badge");
  b.hidden = !ui.unseenAlerts;
  b.textContent = ui.unseenAlerts;
}
function toast(html) {
  const t = document.createElement("div");
  t.className = "toast";
  t.innerHTML = html;
  $("#toasts").prepend(t);
  setTimeout(() => t.remove(), 12000);
}

// ---------------------------------------------------------------- drawer, rows, keys

function openDrawer(kind, key, title, html) {
  ui.drawer = { kind, key };
  $("#drawer-title").textContent = title;
  $("#drawer-body").innerHTML = html;
  $("#drawer").hidden = false;
  $("#drawer").dataset.kind = kind;
}
function closeDrawer() {
  ui.drawer = null;
  $("#drawer").hidden = true;
  const row = $$("#main tbody tr[tabindex]").find((tr) => tr.dataset.opened);
  if (row) { delete row.dataset.opened; row.focus(); }
}
function bindRows(tbody, open) {
  if (!tbody) return;
  for (const tr of tbody.querySelectorAll("tr[tabindex]")) {
    if (tr.dataset.bound) continue;
    tr.dataset.bound = "1";
    const go = () => { for (const o of $$("#main tr[data-opened]")) delete o.dataset.opened; tr.dataset.opened = "1"; open(tr); };
    tr.addEventListener("click", (e) => { if (!e.target.closest("a, button")) go(); });
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); go(); } });
  }
}
$("#drawer-close").onclick = closeDrawer;
document.addEventListener("keydown", (e) => {
  const typing = e.target.closest("input, textarea, select");
  if (e.key === "Escape") { if (typing) e.target.blur(); else if (ui.drawer) closeDrawer(); return; }
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  const views = ["issues", "feed", "agents", "floods", "dlq", "bridges", "alerts"];
  if (/^[1-7]$/.test(e.key)) { location.hash = `#/${views[Number(e.key) - 1]}`; return; }
  if (e.key === "/") { const q = $("#q"); if (q) { e.preventDefault(); q.focus(); } return; }
  if (e.key === "j" || e.key === "k") {
    const rows = $$("#main tbody tr[tabindex]");
    if (!rows.length) return;
    const i = rows.indexOf(document.activeElement);
    const next = rows[Math.min(rows.length - 1, Math.max(0, i < 0 ? 0 : i + (e.key === "j" ? 1 : -1)))];
    next.focus();
    next.scrollIntoView({ block: "nearest" });
    return;
  }
  if (ui.drawer && ui.drawer.kind === "issue") {
    const id = { r: "#btn-resolve", i: "#btn-ignore", u: "#btn-reopen" }[e.key];
    if (id && $(id) && !$(id).disabled) $(id).click();
  }
});

// ---------------------------------------------------------------- live updates

const reloadIssues = debounce(() => { if (ui.view === "issues") loadIssues(); }, 300);
const reloadView = debounce(() => whenReleased("view", async () => {
  if (!["floods", "bridges", "agents", "agent"].includes(ui.view)) return;
  const focused = document.activeElement && main.contains(document.activeElement) ? document.activeElement.dataset.key : null;
  await VIEWS[ui.view]().catch(() => {});
  if (focused) { const tr = main.querySelector(`tbody tr[data-key="${CSS.escape(focused)}"]`); if (tr) tr.focus(); } // a keyboard user keeps their row
}), 500);
const reloadDrawer = debounce(() => whenReleased("drawer", () => { if (ui.drawer && ui.drawer.kind === "issue") openIssue(ui.drawer.key).catch(() => {}); }), 300);
const refreshFacets = debounce(async () => { ui.facets = await api("/api/facets"); }, 1000);

function setStatus(s) {
  ui.status = s;
  const c = $("#conn");
  c.className = "conn live";
  c.textContent = s.caught_up ? `live · ${num(s.events)} events · ${num(s.issues)} issues · seq ${num(s.last_seq)}` : `loading… ${num(s.last_seq)} / ${num(s.backlog_last_seq)}`;
  c.dataset.caughtUp = s.caught_up ? "1" : "";
}
function connect() {
  const es = new EventSource("/api/live");
  es.onmessage = (m) => {
    const b = JSON.parse(m.data);
    if (b.status) {
      const wasLoading = ui.status && !ui.status.caught_up;
      setStatus(b.status);
      if (wasLoading && b.status.caught_up) { refreshFacets(); route(); }
    }
    if (b.resync) { route(); return; }
    if (b.events && b.events.length) { liveFeed(b.events); refreshFacets(); if (ui.view === "agents" || ui.view === "agent") reloadView(); }
    if ((b.issues && b.issues.length) || (b.states && b.states.length)) reloadIssues();
    if (b.states && b.states.length && ui.drawer && ui.drawer.kind === "issue" && b.states.includes(ui.drawer.key)) reloadDrawer();
    if (b.issues && ui.drawer && ui.drawer.kind === "issue" && b.issues.includes(ui.drawer.key)) reloadDrawer();
    if (b.dead_letters && b.dead_letters.length) {
      ui.recentDead = (ui.recentDead || []).concat(b.dead_letters).slice(-200);
      whenReleased("dlq", showRecentDead);
    }
    if (b.floods || b.bridges) reloadView();
    if (b.alerts && b.alerts.length) checkAlerts().catch(() => {});
  };
  es.onerror = () => { const c = $("#conn"); c.className = "conn down"; c.textContent = "reconnecting…"; };
}

(async function start() {
  try { ui.facets = await api("/api/facets"); } catch (e) { /* shown by the view */ }
  checkAlerts().catch(() => {});
  route();
  connect();
})();
