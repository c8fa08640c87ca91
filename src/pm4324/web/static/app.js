/* pm4324 dashboard: one small script for every page, fed by /api/stream (one event a second). */
"use strict";
const $ = (s, root = document) => root.querySelector(s);
const esc = (s) => Charts.esc(s);
const page = document.body.dataset.page;
const state = { live: null, ticks: 0, trend: [], meter: 1, ct: 1, zoom: null, drag: null, shown: [] };
const PREFIXED = new Set(["W", "var", "VA", "Wh", "varh", "VAh"]);

/* A value with its unit, k/M prefixes for powers and energies; null is the meter's "no value". */
function fmt(x, unit, digits = 4) {
  if (x == null || !isFinite(x)) return "—";
  let u = unit || "", v = x;
  if (PREFIXED.has(u) && Math.abs(v) >= 1e6) { v /= 1e6; u = "M" + u; }
  else if (PREFIXED.has(u) && Math.abs(v) >= 1e3) { v /= 1e3; u = "k" + u; }
  const text = Math.abs(v) >= 10 ** digits ? v.toFixed(0) : Number(v.toPrecision(digits)).toString();
  return u === "PF" ? text : `${text} ${u}`.trim();
}
const cell = (key, x, unit, cls = "") => `<td class="${cls}" data-key="${key}" data-raw="${x == null ? "" : x}">${fmt(x, unit)}</td>`;
const flags = (list) => (list || []).map((f) => `<span class="flag" title="${esc(f)}">${esc(f.replace(/_/g, " "))}</span>`).join("");

function say(text, bad = false) { const m = $("#message"); m.textContent = text; m.className = bad ? "bad" : ""; }

async function api(path, options = {}) {
  const token = sessionStorage.getItem("pm4324-token") || "";
  const headers = { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  const r = await fetch(path, { ...options, headers });
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) { const e = new Error(body?.reason || r.statusText); e.body = body; e.status = r.status; throw e; }
  return body;
}

/* -- header: navigation, theme, token, live second ------------------------------------------ */
document.querySelectorAll("nav a").forEach((a) => {
  a.classList.toggle("current", a.dataset.nav === page);
  const d = new URLSearchParams(location.search).get("device");
  if (d) a.href += `?device=${encodeURIComponent(d)}`;
});
const THEMES = ["auto", "light", "dark"];
$("#theme").addEventListener("click", () => {
  const next = THEMES[(THEMES.indexOf(document.documentElement.dataset.theme) + 1) % 3];
  document.documentElement.dataset.theme = next; localStorage.setItem("pm4324-theme", next);
});
$("#token").value = sessionStorage.getItem("pm4324-token") || "";
$("#token").addEventListener("change", (e) => sessionStorage.setItem("pm4324-token", e.target.value.trim()));

function showLive(d) {
  const el = $("#live");
  el.dataset.seq = d.seq;
  const status = d.status.length ? ` · ${d.status.join(", ")}` : "";
  el.textContent = `${d.model} · second ${d.seq} · ${new Date(d.time * 1000).toLocaleTimeString()}${status}`;
  el.className = "live" + (d.status.length ? " bad" : "");
}

/* -- Building ---------------------------------------------------------------------------------- */
async function buildingPage(d) {
  if (!state.today) state.today = (await state.todayFirst) || (await api(onDevice("/api/history/today")));
  else if (state.ticks % 5 === 1) state.today = await api(onDevice("/api/history/today"));
  const today = Object.fromEntries(state.today.rows.map((r) => [r.element, r.energy.wh_import]));
  const u = d.units;
  const meters = d.meters.map((m) => `
    <div class="card" data-meter="${m.meter}">
      <h3><a href="${onDevice(`/meter?m=${m.meter}`)}">${esc(m.name)}</a><span class="muted">${esc(m.wiring)}</span></h3>
      <div class="big" data-key="meter${m.meter}.p_w" data-raw="${m.p_w ?? ""}">${fmt(m.p_w, "W")}</div>
      <dl class="kv">
        <dt>Current</dt><dd data-key="meter${m.meter}.i_rms" data-raw="${m.i_rms ?? ""}">${fmt(m.i_rms, "A")}</dd>
        <dt>PF</dt><dd data-key="meter${m.meter}.pf" data-raw="${m.pf ?? ""}">${fmt(m.pf, "PF", 3)} ${esc(m.lead_lag)}</dd>
        <dt>Import</dt><dd data-key="meter${m.meter}.kwh_import" data-raw="${m.kwh_import ?? ""}">${fmt(m.kwh_import, "kWh", 6)}</dd>
        <dt>Today</dt><dd data-key="meter${m.meter}.today_wh" data-raw="${today[`meter${m.meter}`] ?? ""}">${fmt(today[`meter${m.meter}`], "Wh", 5)}</dd>
      </dl>${flags(m.flags)}
    </div>`).join("");
  const cts = d.cts.map((c) => `<tr data-ct="${c.ct}"><td class="text">${esc(c.name)}</td>
      ${cell(`ct${c.ct}.v_rms`, c.v_rms, u.v_rms)}${cell(`ct${c.ct}.i_rms`, c.i_rms, u.i_rms)}
      ${cell(`ct${c.ct}.p_w`, c.p_w, u.p_w)}${cell(`ct${c.ct}.q_var`, c.q_var, u.q_var)}
      ${cell(`ct${c.ct}.pf`, c.pf, "PF")}${cell(`ct${c.ct}.kwh_import`, c.kwh_import, "kWh")}${cell(`ct${c.ct}.today_wh`, today[`ct${c.ct}`], "Wh")}
      <td class="text">${flags(c.flags)}</td></tr>`).join("");
  const relays = d.relays.map((closed, k) => `<div class="relay" data-relay="${k + 1}">
      <span class="dot ${closed ? "on" : ""}"></span> Relay ${k + 1}: <b>${closed ? "closed" : "open"}</b>
      <span class="muted">(${esc(d.relay_modes[k])})</span>
      ${d.relay_modes[k] === "manual" ? `<button type="button" data-toggle="${k + 1}" data-closed="${closed}">${closed ? "Open" : "Close"}</button>` : ""}
    </div>`).join("");
  const active = d.alarms.filter((a) => a.active || a.unacked);
  const alarms = active.length ? active.map((a) => `<li class="bad">Alarm ${a.alarm}: ${esc(a.rule)}</li>`).join("") : "<li class='ok'>no active alarm</li>";
  if (!$("#building")) $("#content").insertAdjacentHTML("beforeend", "<div id='building' class='stack'></div>");
  $("#building").innerHTML = `
    <section><h2>Meters</h2><div class="grid">${meters}</div></section>
    <section class="grid">
      <div class="card"><h2>Relays</h2>${relays}</div>
      <div class="card"><h2>Alarms</h2><ul id="active-alarms">${alarms}</ul><a href="/events">events and alarms →</a></div>
      ${d.mains.map((m) => `<div class="card"><h2>Main ${m.main}</h2><dl class="kv">
        ${m.v_ln.map((v, k) => `<dt>V${"abc"[k]}</dt><dd data-key="main${m.main}.v_ln${k + 1}" data-raw="${v ?? ""}">${fmt(v, "V")}</dd>`).join("")}
        <dt>f</dt><dd data-key="main${m.main}.frequency_hz" data-raw="${m.frequency_hz ?? ""}">${fmt(m.frequency_hz, "Hz", 5)}</dd></dl></div>`).join("")}
    </section>
    <section class="card scroll"><h2>Circuits</h2><table id="cts"><thead><tr><th>CT</th><th>V</th><th>I</th><th>P</th><th>Q</th><th>PF</th><th>Import</th><th title="import since local midnight (${esc(state.today.date)})">Today</th><th class="text">flags</th></tr></thead>
      <tbody>${cts}</tbody></table></section>`;
}

document.addEventListener("click", async (e) => {
  const t = e.target.closest("[data-toggle]");
  if (!t) return;
  const relay = t.dataset.toggle, closed = t.dataset.closed !== "true";
  try { await api(`/api/relays/${relay}`, { method: "PUT", body: JSON.stringify({ closed }) }); say(`relay ${relay} ${closed ? "closed" : "opened"}`); }
  catch (err) { say(`relay ${relay}: ${err.message}`, true); }
});

/* -- Meter ------------------------------------------------------------------------------------- */
async function meterPage(d) {
  const m = state.meter, meter = d.meters[m - 1];
  if (!$("#meter-view")) {
    const opts = d.meters.map((x) => `<option value="${x.meter}" ${x.meter === m ? "selected" : ""}>${esc(x.name)}</option>`).join("");
    $("#content").innerHTML = `<div class="toolbar"><select id="pick-meter" aria-label="Meter">${opts}</select>
      <select id="pick-ct" aria-label="CT for the spectrum"></select></div>
      <div id="meter-view" class="grid">
        <div class="card"><h2>Phasors</h2><div id="phasors"></div><table id="phasor-table"></table></div>
        <div class="card wide"><h2>Waveforms (last cycles)</h2><div id="wave-v"></div><div id="wave-i"></div></div>
        <div class="card wide"><h2>Harmonics 1–50 <span id="thd" class="muted"></span></h2><div id="harm-v"></div><div id="harm-i"></div></div>
        <div class="card"><h2>Energy by quadrant</h2><dl class="kv" id="energy"></dl></div>
        <div class="card scroll full"><h2>Values</h2><table id="values"></table></div>
      </div>`;
    $("#pick-meter").addEventListener("change", (e) => { state.meter = +e.target.value; state.ct = 3 * state.meter - 2; history.replaceState(null, "", onDevice(`/meter?m=${state.meter}`)); $("#meter-view").remove(); meterPage(state.live); });
    $("#pick-ct").addEventListener("change", (e) => { state.ct = +e.target.value; });
  }
  const cts = d.cts.slice(3 * m - 3, 3 * m);
  $("#pick-ct").innerHTML = cts.map((c) => `<option value="${c.ct}" ${c.ct === state.ct ? "selected" : ""}>${esc(c.name)}</option>`).join("");
  const u = d.units, rows = ["v_rms", "i_rms", "p_w", "q_var", "s_va", "pf", "thd_v_pct", "thd_i_pct", "frequency_hz"];
  const names = { v_rms: "V", i_rms: "I", p_w: "P", q_var: "Q", s_va: "S", pf: "PF", thd_v_pct: "THD V", thd_i_pct: "THD I", frequency_hz: "f" };
  $("#values").innerHTML = `<thead><tr><th></th>${cts.map((c) => `<th>${esc(c.name)}</th>`).join("")}<th>Total</th></tr></thead><tbody>` +
    rows.map((r) => `<tr><td class="text">${names[r]}</td>${cts.map((c) => cell(`ct${c.ct}.${r}`, c[r], r === "pf" ? "PF" : u[r])).join("")}
      ${r in meter ? cell(`meter${m}.${r}`, meter[r], r === "pf" ? "PF" : u[r]) : "<td></td>"}</tr>`).join("") + "</tbody>";
  const kinds = [["kwh_import", "Import", "kWh"], ["kwh_export", "Export", "kWh"], ["kvarh_q1", "QI", "kvarh"], ["kvarh_q2", "QII", "kvarh"],
    ["kvarh_q3", "QIII", "kvarh"], ["kvarh_q4", "QIV", "kvarh"], ["kvah", "Apparent", "kVAh"]];
  $("#energy").innerHTML = kinds.map(([k, label, unit]) => `<dt>${label}</dt><dd data-key="meter${m}.${k}" data-raw="${meter[k] ?? ""}">${fmt(meter[k], unit, 7)}</dd>`).join("");
  const seq = d.seq;
  const [w, h] = await Promise.all([api(onDevice(`/api/meters/${m}/waveforms`)), api(onDevice(`/api/cts/${state.ct}/harmonics`))]);
  if (state.live.seq !== seq) return; // a newer second is already drawing
  $("#phasors").innerHTML = Charts.phasors(w.v_phasors, w.i_phasors);
  $("#phasor-table").innerHTML = [...w.v_phasors, ...w.i_phasors].map((p, k) => `<tr><td class="text">${esc(p.name)}</td><td>${fmt(p.rms, k < 3 ? "V" : "A")}</td><td>${fmt(p.deg, "°", 4)}</td></tr>`).join("");
  const ms = (n) => [[0, "0 ms"], [n - 1, `${((1000 * (n - 1)) / w.sample_rate_hz).toFixed(0)} ms`]];
  const cls = ["va", "vb", "vc"];
  $("#wave-v").innerHTML = Charts.lines(w.v.map((v, k) => ({ values: v, cls: cls[k], label: w.v_phasors[k]?.name || "" })), { label: "voltage waveforms", fmt: (y) => fmt(y, "V", 3), zero: true, xlabels: ms(w.v[0].length) });
  $("#wave-i").innerHTML = Charts.lines(w.i.map((v, k) => ({ values: v, cls: cls[k], label: w.i_phasors[k]?.name || "" })), { label: "current waveforms", fmt: (y) => fmt(y, "A", 3), zero: true, xlabels: ms(w.i[0].length) });
  $("#thd").innerHTML = `${esc(h.name)} · THD V <b data-key="ct${h.ct}.thd_v_pct" data-raw="${h.thd_v_pct ?? ""}">${fmt(h.thd_v_pct, "%", 3)}</b> · THD I <b>${fmt(h.thd_i_pct, "%", 3)}</b>`;
  $("#harm-v").innerHTML = Charts.bars(h.v_rms, { label: "voltage harmonics", cls: "va", skipFirst: true, fmt: (y) => fmt(y, "V", 3) });
  $("#harm-i").innerHTML = Charts.bars(h.i_rms, { label: "current harmonics", cls: "vb", skipFirst: true, fmt: (y) => fmt(y, "A", 3) });
}

/* -- Trends: the history (a zoomable trend, energy per day and month, 15-minute demand) and
   the seconds since the page opened ("live"). Drag across the trend to zoom, double-click to undo. */
const TREND_QUANTITIES = { p_w: ["Active power", "W"], q_var: ["Reactive power", "var"], s_va: ["Apparent power", "VA"],
  i_rms: ["Current", "A"], v_rms: ["Voltage", "V"], pf: ["Power factor", "PF"], thd_v_pct: ["THD voltage", "%"],
  thd_i_pct: ["THD current", "%"], frequency_hz: ["Frequency", "Hz"] };
const METER_QUANTITIES = ["p_w", "q_var", "s_va", "i_rms", "v_rms", "pf", "frequency_hz"];
const RANGES = [["live", "live"], [3 * 3600, "3 h"], [86400, "24 h"], [7 * 86400, "7 days"], [31 * 86400, "31 days"], [366 * 86400, "1 year"]];
const TREND_W = 1200, TREND_L = 64;
const day = (t) => new Date(t * 1000).toLocaleDateString([], { month: "short", day: "numeric" });
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
const stamp = (t, span) => (span > 2 * 86400 ? day(t) : span > 3600 ? clock(t) : new Date(t * 1000).toLocaleTimeString());

async function trendsInit() {
  const span = (state.span = await api(onDevice("/api/history/span")));
  const options = span.labels.filter((x) => x.element.startsWith("meter")).concat(span.labels.filter((x) => x.element.startsWith("ct")))
    .map((x) => `<option value="${x.element}">${esc(x.label)}</option>`).join("");
  $("#content").innerHTML = `<div class="toolbar">
      <select id="trend-element" aria-label="Meter or CT">${options}</select>
      <select id="trend-q" aria-label="quantity"></select>
      <select id="trend-range" aria-label="range">${RANGES.map(([v, l]) => `<option value="${v}" ${v === 86400 ? "selected" : ""}>${l}</option>`).join("")}</select>
      <button type="button" id="trend-reset" hidden>whole range</button>
      <span class="muted hint" id="history-span"></span></div>
    <section class="card"><h2 id="trend-title">Trend</h2><div id="trend" style="touch-action: none; user-select: none"></div>
      <p class="muted hint" id="trend-info"></p></section>
    <section class="grid two">
      <div class="card"><h2>Energy per day <span class="muted">(import, last 31 days)</span></h2><div id="energy-day"></div></div>
      <div class="card"><h2>Energy per month <span class="muted">(import, 12 months)</span></h2><div id="energy-month"></div></div>
    </section>
    <section class="card"><h2>15-minute demand <span class="muted" id="demand-day"></span></h2><div id="demand"></div>
      <p class="hint" id="demand-max"></p></section>`;
  $("#history-span").textContent = span.first == null ? (span.enabled ? "no history yet: it grows by the minute" : "this server keeps no history")
    : `history ${new Date(span.first * 1000).toLocaleDateString()} – ${new Date((span.last + 900) * 1000).toLocaleString()} (${span.time_zone})`;
  const quantities = () => {
    const el = $("#trend-element").value, keys = el.startsWith("ct") ? Object.keys(TREND_QUANTITIES) : METER_QUANTITIES;
    const was = $("#trend-q").value || "p_w";
    $("#trend-q").innerHTML = keys.map((k) => `<option value="${k}" ${k === was ? "selected" : ""}>${TREND_QUANTITIES[k][0]}</option>`).join("");
  };
  quantities();
  $("#trend-element").addEventListener("change", () => { quantities(); state.zoom = null; trendsDraw(); energyDraw(); });
  $("#trend-q").addEventListener("change", () => { state.zoom = null; trendsDraw(); });
  $("#trend-range").addEventListener("change", () => { state.zoom = null; trendsDraw(); });
  $("#trend-reset").addEventListener("click", () => { state.zoom = null; trendsDraw(); });
  $("#trend").addEventListener("dblclick", () => { state.zoom = null; trendsDraw(); });
  $("#trend").addEventListener("pointerdown", (e) => { state.drag = trendTime(e); });
  $("#trend").addEventListener("pointerup", (e) => {
    const a = state.drag, b = trendTime(e); state.drag = null;
    if (a != null && b != null && Math.abs(b - a) >= 2) { state.zoom = [Math.min(a, b), Math.max(a, b)]; trendsDraw(); }
  });
  await Promise.all([trendsDraw(), energyDraw()]);
  $("#content").dataset.ready = "1";
}
function newest() { // the newest second known: the live one, else the end of the history
  if (state.live) return state.live.time;
  return state.span?.last != null ? state.span.last + 900 : Date.now() / 1000;
}
function trendsPage(d) {
  state.trend.push(d); if (state.trend.length > 3600) state.trend.shift();
  if ($("#trend-range")?.value === "live" && !state.zoom) trendsDraw();
}
function liveSeries(el, q) {
  const [kind, n] = [el.replace(/\d+$/, ""), +el.replace(/^\D+/, "")];
  return state.trend.map((p) => ({ t: p.time, y: (kind === "ct" ? p.cts : p.meters)[n - 1]?.[q] ?? null }));
}
async function trendsDraw() {
  const el = $("#trend-element").value, q = $("#trend-q").value, range = $("#trend-range").value;
  const [label, unit] = TREND_QUANTITIES[q], name = $("#trend-element").selectedOptions[0].textContent;
  $("#trend-reset").hidden = !state.zoom;
  $("#trend-title").textContent = `${label} · ${name}`;
  let tr, t0, t1, info;
  if (range === "live") {
    const pts = liveSeries(el, q).filter((p) => !state.zoom || (p.t >= state.zoom[0] && p.t <= state.zoom[1]));
    tr = { t: pts.map((p) => p.t), mean: pts.map((p) => p.y), min: pts.map((p) => p.y), max: pts.map((p) => p.y) };
    [t0, t1] = pts.length ? [pts[0].t, pts.at(-1).t] : [0, 1];
    info = `live: the seconds since this page opened (${pts.length})`;
  } else {
    [t0, t1] = state.zoom || [newest() - +range, newest()];
    const seq = (state.trendSeq = (state.trendSeq || 0) + 1);
    tr = await api(onDevice(`/api/history/trend?element=${el}&quantity=${q}&start=${Math.floor(t0)}&end=${Math.ceil(t1)}&points=1200`));
    if (seq !== state.trendSeq) return; // a newer request is drawing
    info = tr.t.length ? `${tr.t.length} points from the ${{ raw: "1-second", "1min": "1-minute", "15min": "15-minute" }[tr.resolution]} history, downsampled on the meter`
      : "no history in this range";
  }
  state.shown = tr.t.map((t) => ({ time: t }));
  const vals = tr.mean.filter((x) => x != null), maxs = tr.max.filter((x) => x != null);
  if (vals.length) {
    const mean = vals.reduce((a, b) => a + b, 0) / vals.length, max = Math.max(...maxs);
    info += ` · mean <b id="trend-mean" data-raw="${mean}">${fmt(mean, unit)}</b> · max <b id="trend-max" data-raw="${max}">${fmt(max, unit)}</b>`;
  }
  $("#trend-info").innerHTML = info;
  const span = t1 - t0, ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => [t0 + f * span, stamp(t0 + f * span, span)]);
  $("#trend").innerHTML = tr.t.length ? Charts.timeLines(tr, { t0, t1, label, fmt: (y) => fmt(y, unit, 4), xlabels: ticks, width: TREND_W })
    : `<p class="muted">no values ${range === "live" ? "yet" : "in this range"}</p>`;
  Object.assign($("#trend").dataset, { element: el, quantity: q, span: Math.round(t1 - t0) });
}
function trendTime(e) { // the time under the pointer
  const svg = $("#trend svg"), pts = state.shown || [];
  if (!svg || pts.length < 2) return null;
  const r = svg.getBoundingClientRect(), x = ((e.clientX - r.left) / r.width) * TREND_W;
  const t0 = pts[0].time, t1 = pts.at(-1).time, range = $("#trend-range").value;
  const [a, b] = state.zoom || (range === "live" ? [t0, t1] : [newest() - +range, newest()]);
  return a + ((x - TREND_L) / (TREND_W - TREND_L - 4)) * (b - a);
}
async function energyDraw() {
  const el = $("#trend-element").value;
  const [days, months, demand] = await Promise.all([
    api(onDevice(`/api/history/energy?element=${el}&period=day`)), api(onDevice(`/api/history/energy?element=${el}&period=month`)),
    api(onDevice(`/api/history/demand?element=${el}&start=${Math.floor(newest() - 86400)}&end=${Math.ceil(newest())}`))]);
  const bars = (rows, label) => rows.map((r) => ({ key: r.period, value: r.energy.wh_import ?? null, label: label(r.period),
    title: `${r.period}: ${fmt(r.energy.wh_import, "Wh", 6)}` }));
  const wh = (y) => fmt(y, "Wh", 3);
  $("#energy-day").innerHTML = days.rows.length ? Charts.columns(bars(days.rows, (p) => p.slice(5)), { label: "energy per day", fmt: wh, height: 240 }) : "<p class='muted'>no day stored yet</p>";
  $("#energy-month").innerHTML = months.rows.length ? Charts.columns(bars(months.rows, (p) => p), { label: "energy per month", fmt: wh, labels: 12, height: 240 }) : "<p class='muted'>no month stored yet</p>";
  const items = demand.t.map((t, k) => ({ key: String(t), value: demand.kw[k], label: clock(t), title: `${clock(t)}: ${fmt(demand.kw[k] * 1000, "W")} (${demand.seconds[k]} s)` }));
  const mark = demand.max ? demand.t.indexOf(demand.max.at) : -1;
  $("#demand-day").textContent = demand.t.length ? `(${new Date(demand.t[0] * 1000).toLocaleString()} – ${clock(demand.t.at(-1) + 900)})` : "";
  $("#demand").innerHTML = items.length ? Charts.columns(items, { label: "15-minute demand", fmt: (y) => fmt(y * 1000, "W", 3), mark, width: 1200 }) : "<p class='muted'>no 15-minute interval stored yet</p>";
  $("#demand-max").innerHTML = demand.max ? `maximum <b id="max-kw" data-raw="${demand.max.kw}" data-at="${demand.max.at}">${fmt(demand.max.kw * 1000, "W")}</b> in the interval from ${new Date(demand.max.at * 1000).toLocaleString()}` : "";
}

/* -- Events and alarms ------------------------------------------------------------------------- */
async function eventsPage(d) {
  if (!$("#events") || state.ticks % 5 === 0) {
    const events = await api("/api/events?limit=200");
    const rows = events.map((e) => `<tr><td class="text">${new Date(e.time * 1000).toLocaleString()}</td><td class="text">${esc(e.kind)}</td><td class="text">${esc(e.text)}</td></tr>`).join("");
    const content = `<section class="card"><h2>Alarms</h2><div id="alarms"></div>
      <button type="button" id="ack">Acknowledge all</button></section>
      <section class="card scroll"><h2>Events</h2><table id="events"><thead><tr><th>time</th><th class="text">kind</th><th class="text">what</th></tr></thead><tbody>${rows}</tbody></table></section>`;
    if (!$("#events")) { $("#content").innerHTML = content; $("#ack").addEventListener("click", ack); }
    else $("#events tbody").innerHTML = rows;
  }
  $("#alarms").innerHTML = d.alarms.length ? `<table><thead><tr><th>#</th><th class="text">rule</th><th>relay</th><th>value</th><th class="text">state</th></tr></thead><tbody>` +
    d.alarms.map((a) => `<tr data-alarm="${a.alarm}"><td>${a.alarm}</td><td class="text">${esc(a.rule)}</td><td>${a.relay}</td><td>${fmt(a.value, "", 4)}</td>
      <td class="text ${a.active ? "bad" : "ok"}">${a.active ? "active" : "clear"}${a.unacked ? " · unacknowledged" : ""}</td></tr>`).join("") + "</tbody></table>"
    : "<p class='muted'>no alarm rule is enabled</p>";
}
async function ack() {
  try { await api("/api/alarms/acknowledge", { method: "POST", body: JSON.stringify({ relay: null }) }); say("alarms acknowledged"); }
  catch (err) { say(`acknowledge: ${err.message}`, true); }
}

/* -- Settings ---------------------------------------------------------------------------------- */
const WIRINGS = ["3P4W-3CT", "3P3W-3CT", "3P3W-2CT", "1P3W-2CT", "1P2W-1CT"];
async function settingsPage() {
  if ($("#settings")) return;
  const s = await api("/api/settings"), v = s.values;
  const field = (key, label, value, input) => `<div class="field"><label for="f-${key}">${label}</label>${input(`f-${key}`, key, value)}<span class="error" data-error="${key}"></span></div>`;
  const num = (id, key, value) => `<input id="${id}" name="${key}" type="number" step="any" value="${value}" data-was="${value}">`;
  const pick = (choices) => (id, key, value) => `<select id="${id}" name="${key}" data-was="${value}">${choices.map((c) => `<option ${c === value ? "selected" : ""}>${c}</option>`).join("")}</select>`;
  let html = "";
  Object.entries(v.mains || {}).forEach(([k, m]) => {
    html += field(`mains.${k}.pt_ratio`, `Main ${k} PT ratio`, m.pt_ratio, num) + field(`mains.${k}.nominal_voltage_v`, `Main ${k} nominal V (L-N)`, m.nominal_voltage_v, num);
  });
  const text = (id, key, value) => `<input id="${id}" name="${key}" type="text" maxlength="60" value="${esc(value)}" data-was="${esc(value)}">`;
  Object.entries(v.meters || {}).forEach(([k, m]) => {
    if (m.name !== undefined) html += field(`meters.${k}.name`, `Meter ${k} name`, m.name, text);
    html += field(`meters.${k}.wiring`, `Meter ${k} wiring`, m.wiring, pick(WIRINGS)) + field(`meters.${k}.ct_ratio`, `Meter ${k} CT ratio (A)`, m.ct_ratio, num);
    (m.ct_names || []).forEach((name, j) => { html += field(`meters.${k}.ct_names.${j + 1}`, `CT ${3 * k - 2 + j} name`, name, text); });
  });
  [1, 2].forEach((k) => {
    const mode = v.relays?.[k]?.mode || "manual";
    html += field(`relays.${k}.mode`, `Relay ${k} mode`, mode, pick(["manual", "alarm"]));
  });
  $("#content").innerHTML = `<section class="card"><h2>Settings</h2>
    <p class="muted">Changes are checked by the same rules as the settings file and need a token with the <b>settings</b> role (🔑 above).</p>
    <form id="settings" class="settings">${html}<div><button class="primary" type="submit">Apply</button></div></form></section>
    <section class="card scroll"><h2>Settings file</h2><pre id="toml">${esc(s.toml)}</pre></section>`;
  $("#settings").addEventListener("submit", async (e) => {
    e.preventDefault();
    document.querySelectorAll("[data-error]").forEach((x) => { x.textContent = ""; });
    const changes = {};
    e.target.querySelectorAll("[name]").forEach((x) => {
      if (x.value !== x.dataset.was) changes[x.name] = x.type === "number" ? Number(x.value) : x.value;
    });
    if (!Object.keys(changes).length) { say("nothing changed"); return; }
    try {
      const now = await api("/api/settings", { method: "PATCH", body: JSON.stringify({ changes }) });
      Object.keys(changes).forEach((k) => { const x = e.target.querySelector(`[name="${k}"]`); x.dataset.was = x.value; });
      $("#toml").textContent = now.toml; say("settings applied");
    } catch (err) {
      const slot = err.body?.key && document.querySelector(`[data-error="${err.body.key}"]`);
      if (slot) slot.textContent = err.body.reason;
      say(`settings refused: ${err.message}`, true);
    }
  });
}

/* -- Wiring check (every 5 s: GET /api/wiring) ------------------------------------------------ */
async function wiringPage() {
  if (state.wiring && state.ticks % 5 !== 1) return;
  const w = state.wiring = await api(onDevice("/api/wiring"));
  const good = new Set(["ok", "unused"]);
  const mains = w.mains.map((m) => `<li class="${m.status === "ok" ? "ok" : "bad"}">${esc(m.text)}</li>`).join("");
  const rows = w.cts.filter((c) => c.status !== "unused").map((c) => `<tr data-ct="${c.ct}" data-status="${c.status}">
    <td>${c.ct}</td><td class="text ${good.has(c.status) || c.status === "open" ? "ok" : "bad"}">${esc(c.status.replace(/_/g, " "))}</td>
    <td class="text" style="white-space: normal">${esc(c.text)}</td><td class="text" style="white-space: normal"><code>${c.fix.map(esc).join("<br>")}</code></td></tr>`).join("");
  $("#content").innerHTML = `<section class="card"><h2>Wiring check</h2>
    <p class="muted">${w.problems ? `${w.problems} wiring problem(s)` : "No wiring problem found"} in the newest second; expected PF range per CT in the settings ([cts.N], default 0.7 lagging … 0.95 leading).</p>
    <ul id="wiring-mains">${mains}</ul></section>
    <section class="card scroll"><table id="wiring"><thead><tr><th>CT</th><th class="text">verdict</th><th class="text">why</th><th class="text">settings fix</th></tr></thead><tbody>${rows}</tbody></table></section>`;
}

/* -- the stream -------------------------------------------------------------------------------- */
const device = new URLSearchParams(location.search).get("device");
const onDevice = (path) => (device ? `${path}${path.includes("?") ? "&" : "?"}device=${encodeURIComponent(device)}` : path);
const PAGES = { building: buildingPage, meter: meterPage, trends: trendsPage, events: eventsPage, settings: settingsPage,
  wiring: wiringPage };
const params = new URLSearchParams(location.search);
state.meter = Math.min(8, Math.max(1, +(params.get("m") || 1)));
state.ct = 3 * state.meter - 2;
let drawing = false;
async function show(d) {
  if (state.live && d.seq === state.live.seq) return;
  state.live = d; state.ticks += 1; showLive(d);
  if (drawing && page !== "trends") return;
  drawing = true;
  try { await PAGES[page](d); } catch (err) { say(err.message, true); } finally { drawing = false; }
}
function connect() {
  if (device) { // another meter of a hub: the stream carries the first one, so ask for its newest second
    const poll = async () => {
      try {
        const me = (await api("/api/fleet")).find((m) => m.key === device);
        if (!me) { say(`no meter ${device} here`, true); return; }
        if (me.seq == null) { $("#live").textContent = `${device}: no second yet (${me.online ? "online" : "offline"})`; return; }
        if (state.live?.seq !== me.seq) await show(await api(onDevice("/api/snapshot")));
      } catch (err) { say(err.message, true); }
    };
    poll(); setInterval(poll, 1000);
    return;
  }
  const source = new EventSource("/api/stream");
  source.addEventListener("snapshot", (e) => show(JSON.parse(e.data)));
  source.onerror = () => { $("#live").textContent = "reconnecting…"; };
}

/* A hub's meters: online or not, last seen, gaps of the last 7 days (when the server shows
   more than one meter); drawn with or without a live second, refreshed every 5 s. */
async function fleetCard() {
  const fleet = await api("/api/fleet");
  if (fleet.length < 2) return false; // one meter (`run`): no list, and no more asking
  const gaps = await api("/api/history/gap-summary?days=7");
  const g = Object.fromEntries(gaps.map((x) => [x.device, x]));
  const minutes = (s) => (s >= 3600 ? `${(s / 3600).toFixed(1)} h` : `${Math.round(s / 60)} min`);
  const rows = fleet.map((m) => {
    const x = g[m.key] || { gaps: 0, missing_s: 0, backfilled: 0 };
    const text = x.gaps ? `${x.gaps} · ${minutes(x.missing_s)} missing` : "none";
    return `<tr data-device="${esc(m.key)}"><td class="text"><a href="/?device=${encodeURIComponent(m.key)}">${esc(m.key)}</a></td>
    <td class="text ${m.online ? "ok" : "bad"}">${m.online ? "online" : "offline"}</td>
    <td class="text">${m.last_seen ? new Date(m.last_seen * 1000).toLocaleTimeString() : "never"}</td>
    <td class="text ${x.gaps ? "bad" : ""}" data-gaps="${x.gaps}" data-missing="${x.missing_s}">${text}${x.backfilled ? ` <span class="muted">(${x.backfilled} backfilled)</span>` : ""}</td>
    <td class="text">${esc(m.model || "")}</td></tr>`;
  }).join("");
  if (!$("#fleet")) $("#content").insertAdjacentHTML("afterbegin", `<section class="card scroll" id="fleet"><h2>Meters of this hub</h2>
    <table><thead><tr><th class="text">meter</th><th class="text">state</th><th class="text">last seen</th><th class="text">gaps (7 days)</th><th class="text">model</th></tr></thead><tbody></tbody></table></section>`);
  $("#fleet tbody").innerHTML = rows;
  return true;
}
if (page === "building") {
  state.todayFirst = api(onDevice("/api/history/today")).catch(() => null); // while the stream connects
  const refresh = async () => {
    try { if (!(await fleetCard())) clearInterval(timer); } catch (err) { say(err.message, true); }
  };
  const timer = setInterval(refresh, 5000);
  refresh();
}
if (page === "trends") trendsInit().catch((err) => say(err.message, true));
connect();
