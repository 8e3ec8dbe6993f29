// costledger's cost explorer: a read-only page over /api/v1. No dependencies, no CDN.
// Amounts arrive as exact decimal strings and stay strings: display rounding (2 places, half
// to even, like the weekly report) and chart bar lengths use BigInt, never floating point.
// Every value from the ledger is put in the page as text (textContent), never as HTML.
"use strict";

const METRICS = ["BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "PricingQuantity", "ConsumedQuantity", "lines"];
const VIEWS = ["overview", "explorer", "unallocated", "findings", "loads", "periods"];
let token = sessionStorage.getItem("costledger_token") || "";

function reportError(message) {
  const box = document.getElementById("errors");
  box.textContent += message + "\n";
  document.body.dataset.errors = String((Number(document.body.dataset.errors) || 0) + 1);
}
window.addEventListener("error", (e) => reportError("page error: " + e.message));
window.addEventListener("unhandledrejection", (e) => reportError("page error: " + (e.reason && e.reason.message ? e.reason.message : e.reason)));

// --- exact decimals ---------------------------------------------------------------------------
// A decimal string as [BigInt units, scale]: "12.345" → [12345n, 3].
function parseDec(s) {
  const m = /^(-?)(\d*)(?:\.(\d*))?$/.exec(String(s).trim());
  if (!m) return null;
  const frac = m[3] || "";
  const units = BigInt((m[2] || "0") + frac);
  return [m[1] === "-" ? -units : units, frac.length];
}
// Round to `dp` places, half to even; returns BigInt units at scale dp.
function roundUnits(s, dp) {
  const p = parseDec(s);
  if (!p) return null;
  let [u, scale] = p;
  if (scale <= dp) return u * 10n ** BigInt(dp - scale);
  const div = 10n ** BigInt(scale - dp);
  const neg = u < 0n;
  if (neg) u = -u;
  let q = u / div;
  const r = u % div;
  const twice = r * 2n;
  if (twice > div || (twice === div && q % 2n === 1n)) q += 1n;
  return neg ? -q : q;
}
function fixed(s, dp) {
  const u = roundUnits(s, dp);
  if (u === null) return String(s);
  const neg = u < 0n;
  let digits = (neg ? -u : u).toString().padStart(dp + 1, "0");
  const int = digits.slice(0, digits.length - dp);
  const frac = digits.slice(digits.length - dp);
  return (neg && u !== 0n ? "-" : "") + int + (dp > 0 ? "." + frac : "");
}
function addDec(a, b) {
  const pa = parseDec(a), pb = parseDec(b);
  const scale = Math.max(pa[1], pb[1]);
  const sum = pa[0] * 10n ** BigInt(scale - pa[1]) + pb[0] * 10n ** BigInt(scale - pb[1]);
  const neg = sum < 0n;
  let d = (neg ? -sum : sum).toString().padStart(scale + 1, "0");
  let s = scale > 0 ? d.slice(0, d.length - scale) + "." + d.slice(d.length - scale) : d;
  if (scale > 0) s = s.replace(/0+$/, "").replace(/\.$/, "");
  return (neg ? "-" : "") + s;
}

function negate(s) {
  return s.startsWith("-") ? s.slice(1) : "-" + s;
}

// --- DOM --------------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
function amount(s, cls) {
  if (s === null || s === undefined) return el("td", { class: "amt " + (cls || "") }, "");
  return el("td", { class: "amt " + (cls || ""), "data-exact": s, title: s + " (exact)" }, fixed(s, 2));
}
function table(headers, rows, amountCols) {
  const amt = new Set(amountCols || []);
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", { class: amt.has(i) ? "amt" : null }, h)))),
    el("tbody", {}, rows));
}
function place(id, node) {
  const box = document.getElementById(id);
  box.replaceChildren(node);
}
function showProblem(id, message) {
  place(id, el("p", { class: "error" }, message));
}

// --- API --------------------------------------------------------------------------------------
class ApiError extends Error {}
async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { headers });
  if (r.status === 401) {
    showLogin(token ? "that token was not accepted" : "");
    throw new ApiError("a token is required");
  }
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new ApiError(body && body.error ? body.error.message : "HTTP " + r.status);
  return body;
}

// --- fragment state (#view=explorer&group_by=service…) --------------------------------------
function fragment() {
  return new URLSearchParams(location.hash.replace(/^#/, ""));
}
function setFragment(p) {
  history.replaceState(null, "", "#" + p.toString());
}

// --- views ------------------------------------------------------------------------------------
async function overview() {
  const periods = await api("/api/v1/periods");
  const months = [...new Set(periods.map((p) => p.period))].sort();
  const sources = await api("/api/v1/sources");
  place("overview-sources", table(["source", "type", "data as of", "newest load", "state", "finished"],
    sources.map((s) => el("tr", {},
      el("td", {}, s.name), el("td", {}, s.kind || "(import)"), el("td", {}, s.data_end || "-"),
      el("td", {}, s.last_load ? String(s.last_load.id) : "-"), el("td", {}, s.last_load ? s.last_load.state : "-"),
      el("td", {}, s.last_load ? (s.last_load.finished_at || "-") : "-")))));
  if (months.length === 0) {
    place("overview-months", el("p", { class: "note" }, "The ledger is empty: ingest a source first."));
    place("overview-owners", el("p", {}));
    return;
  }
  const last = months[months.length - 1];
  const prev = months.length > 1 ? months[months.length - 2] : null;
  const q = new URLSearchParams({ group_by: "provider", grain: "billing_period", from: prev || last, to: last, by_billing_period: "true" });
  const r = await api("/api/v1/costs?" + q);
  const by = new Map();
  for (const row of r.rows) {
    const key = (row.keys[0] ?? "(none)") + "\u0000" + row.currency;
    if (!by.has(key)) by.set(key, { provider: row.keys[0] ?? "(none)", currency: row.currency, prev: null, last: null });
    by.get(key)[row.bucket === last ? "last" : "prev"] = row.values[0];
  }
  // last − prev, exactly; a side without spend counts as nothing.
  const change = (x) => (x.last === null ? (x.prev === null ? null : negate(x.prev)) : (x.prev === null ? x.last : addDec(x.last, negate(x.prev))));
  const rows = [...by.values()].map((x) => el("tr", {},
    el("td", {}, x.provider), el("td", {}, x.currency), amount(x.prev), amount(x.last),
    amount(change(x))));
  place("overview-months", table(["provider", "currency", prev || "-", last, "change"], rows, [2, 3, 4]));
  // Owners: the last period against the one before, from the last reconcile.
  const owners = new Map();
  for (const [period, col] of [[prev, "prev"], [last, "last"]]) {
    if (!period) continue;
    for (const a of await api("/api/v1/allocation?period=" + encodeURIComponent(period))) {
      const name = a.owner ?? "(unallocated)";
      const key = name + "\u0000" + a.currency;
      if (!owners.has(key)) owners.set(key, { owner: name, currency: a.currency, prev: null, last: null });
      const o = owners.get(key);
      o[col] = o[col] === null ? a.amount : addDec(o[col], a.amount);
    }
  }
  place("overview-owners", owners.size === 0
    ? el("p", { class: "note" }, "No allocation for " + last + " yet: run `costledger reconcile`.")
    : table(["owner", "currency", prev || "-", last, "change"], [...owners.values()].map((o) => el("tr", {},
      el("td", {}, o.owner), el("td", {}, o.currency), amount(o.prev), amount(o.last), amount(change(o)))), [2, 3, 4]));
}

function explorerParams() {
  const f = document.getElementById("explorer-form");
  const p = new URLSearchParams();
  const v = (n) => f.elements[n].value.trim();
  if (v("metric")) p.set("metric", v("metric"));
  if (v("group_by")) p.set("group_by", v("group_by"));
  if (v("grain") && v("grain") !== "none") p.set("grain", v("grain"));
  for (const w of v("where").split(";").map((s) => s.trim()).filter(Boolean)) p.append("where", w);
  for (const n of ["from", "to", "currency", "top"]) if (v(n)) p.set(n, v(n));
  return p;
}

function chart(r) {
  const rows = r.rows.filter((x) => x.values[0] !== null).slice(0, 25);
  if (rows.length === 0) return el("p", { class: "note" }, "Nothing to chart.");
  const units = rows.map((x) => roundUnits(x.values[0], 2));
  const abs = (u) => (u < 0n ? -u : u);
  const max = units.reduce((m, u) => (abs(u) > m ? abs(u) : m), 1n);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const rowH = 20, labelW = 320, barW = 560;
  svg.setAttribute("width", String(labelW + barW + 120));
  svg.setAttribute("height", String(rows.length * rowH + 10));
  rows.forEach((x, i) => {
    const label = (x.others ? ["(others)"] : x.keys.map((k) => k ?? "(none)")).concat(x.bucket ? [x.bucket] : [], [x.currency]).join(" · ");
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", "0"); t.setAttribute("y", String(i * rowH + 14)); t.textContent = label.slice(0, 48);
    const w = Number((abs(units[i]) * BigInt(barW)) / max);
    const b = document.createElementNS(ns, "rect");
    b.setAttribute("x", String(labelW)); b.setAttribute("y", String(i * rowH + 3));
    b.setAttribute("width", String(Math.max(w, 1))); b.setAttribute("height", String(rowH - 6));
    b.setAttribute("class", units[i] < 0n ? "neg" : "pos");
    const v = document.createElementNS(ns, "text");
    v.setAttribute("x", String(labelW + Math.max(w, 1) + 6)); v.setAttribute("y", String(i * rowH + 14));
    v.textContent = fixed(x.values[0], 2);
    svg.append(t, b, v);
  });
  return svg;
}

function resultTable(r) {
  const heads = [...r.group_by, ...(r.grain !== "none" ? [r.grain] : []), "currency", ...r.metrics];
  const first = heads.length - r.metrics.length;
  const rows = r.rows.map((x) => el("tr", { class: x.others ? "others" : null },
    x.keys.map((k) => el("td", {}, x.others ? "(others)" : (k ?? "(none)"))),
    x.bucket !== undefined ? el("td", {}, x.bucket) : null,
    el("td", {}, x.currency),
    x.values.map((v) => amount(v))));
  const totals = r.totals.map((t) => el("tr", { class: "total" },
    el("td", { colspan: String(first - 1) }, "total"), el("td", {}, t.currency), t.values.map((v) => amount(v))));
  return table(heads, rows.concat(totals), heads.map((_, i) => i).filter((i) => i >= first));
}

async function explorer() {
  const p = explorerParams();
  const r = await api("/api/v1/costs?" + p);
  const f = fragment();
  for (const k of ["metric", "group_by", "grain", "where", "from", "to", "currency", "top"]) f.delete(k);
  for (const [k, v] of p) f.append(k, v);
  f.set("view", "explorer");
  setFragment(f);
  document.getElementById("explorer-note").textContent =
    r.lines + " charge lines, " + r.total_rows + " rows" + (r.next_offset ? " (first " + r.rows.length + " shown; the CSV has all)" : "") +
    "; answered from " + r.answered_from + (r.rates_used.length ? "; rates: " + r.rates_used.join("; ") : "");
  place("explorer-chart", chart(r));
  place("explorer-table", resultTable(r));
}

async function downloadCsv() {
  const p = explorerParams();
  p.set("format", "csv");
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch("/api/v1/costs?" + p, { headers });
  if (!r.ok) { showProblem("explorer-table", (await r.json()).error.message); return; }
  const url = URL.createObjectURL(await r.blob());
  const a = el("a", { href: url, download: "costledger-costs.csv" });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function unallocated() {
  const rows = (await api("/api/v1/allocation")).filter((a) => a.owner === null);
  place("unallocated-table", rows.length === 0
    ? el("p", { class: "note" }, "No unallocated spend (or no reconcile yet).")
    : table(["period", "reason", "currency", "amount", "charges", "what to do"], rows.map((a) => el("tr", {},
      el("td", {}, a.period), el("td", {}, a.reason ?? "-"), el("td", {}, a.currency), amount(a.amount),
      el("td", { class: "amt" }, String(a.rows)), el("td", {}, a.remedy ?? ""))), [3, 4]));
}

async function findings() {
  const rows = await api("/api/v1/findings");
  place("findings-table", rows.length === 0 ? el("p", { class: "note" }, "No findings.")
    : table(["check", "period", "account", "currency", "amount", "what"], rows.map((f) => el("tr", {},
      el("td", {}, f.check), el("td", {}, f.period), el("td", {}, f.billing_account_id ?? ""), el("td", {}, f.currency ?? ""),
      amount(f.amount), el("td", {}, f.message))), [4]));
}

function totalsText(t) {
  return Object.entries(t).map(([c, v]) => c + " " + fixed(v, 2)).join(", ") || "-";
}

async function loads() {
  const rows = await api("/api/v1/loads?limit=200");
  place("loads-table", table(["load", "state", "source", "scope", "rows", "quarantined", "finished", "BilledCost / error"],
    rows.map((l) => el("tr", {}, el("td", {}, String(l.id)), el("td", {}, l.state), el("td", {}, l.source), el("td", {}, l.scope),
      el("td", { class: "amt" }, String(l.rows)), el("td", { class: "amt" }, String(l.quarantined)), el("td", {}, l.finished_at ?? "-"),
      el("td", {}, l.error ?? totalsText(l.totals))))));
}

async function periods() {
  const rows = await api("/api/v1/periods");
  place("periods-table", table(["source", "period", "state", "BilledCost", "invoices"],
    rows.map((p) => el("tr", {}, el("td", {}, p.source), el("td", {}, p.period), el("td", {}, p.state),
      el("td", {}, totalsText(p.totals)), el("td", {}, p.invoice_ids.join(", "))))));
}

const RENDER = { overview, explorer, unallocated, findings, loads, periods };

async function show(view) {
  if (!VIEWS.includes(view)) view = "overview";
  for (const v of VIEWS) document.getElementById(v).hidden = v !== view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  document.getElementById("login").hidden = true;
  document.body.dataset.state = "loading";
  try {
    await RENDER[view]();
    document.body.dataset.state = "ready";
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    const target = { overview: "overview-months", explorer: "explorer-table" }[view] || view + "-table";
    if (document.getElementById("login").hidden) showProblem(target, e.message);
    document.body.dataset.state = "problem";
  }
}

function showLogin(message) {
  for (const v of VIEWS) document.getElementById(v).hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.body.dataset.state = "login";
}

async function start() {
  const f = fragment();
  if (f.has("token")) {
    // A token passed once in the fragment (never sent to the server) is kept for this tab.
    token = f.get("token");
    sessionStorage.setItem("costledger_token", token);
    f.delete("token");
    setFragment(f);
  }
  document.getElementById("signout").hidden = !token;
  document.getElementById("metric-list").replaceChildren(...METRICS.map((m) => el("option", { value: m })));
  const form = document.getElementById("explorer-form");
  for (const k of ["metric", "group_by", "grain", "from", "to", "currency", "top"]) if (f.has(k)) form.elements[k].value = f.get(k);
  if (f.has("where")) form.elements.where.value = f.getAll("where").join("; ");
  form.addEventListener("submit", (e) => { e.preventDefault(); show("explorer"); });
  document.getElementById("csv").addEventListener("click", () => downloadCsv());
  document.getElementById("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = document.getElementById("token").value.trim();
    sessionStorage.setItem("costledger_token", token);
    document.getElementById("signout").hidden = false;
    show(fragment().get("view") || "overview");
  });
  document.getElementById("signout").addEventListener("click", () => {
    token = ""; sessionStorage.removeItem("costledger_token"); showLogin("");
  });
  for (const a of document.querySelectorAll("nav a")) a.addEventListener("click", (e) => {
    e.preventDefault();
    const p = fragment(); p.set("view", a.dataset.view); setFragment(p); show(a.dataset.view);
  });
  await show(f.get("view") || "overview");
  try {
    const dims = await api("/api/v1/dimensions");
    document.getElementById("dims").replaceChildren(...dims.map((d) => el("option", { value: d.name }, d.meaning)));
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
  }
}

start();
