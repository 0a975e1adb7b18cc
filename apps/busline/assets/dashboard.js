// busline monitor: live dashboard. No libraries; charts are drawn on <canvas>.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
const WINDOW_SECS = 120; // seconds shown on the charts
const KEEP = 300;        // points kept per chart

// ---------- formatting ----------
function fmtMs(v) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + " s";
  if (v >= 100) return Math.round(v) + " ms";
  if (v >= 10) return v.toFixed(1) + " ms";
  return v.toFixed(2) + " ms";
}
function fmtNum(v) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}
function fmtTime(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false });
}
function fmtDur(s) {
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
}
// A round step and a top for a y axis of at most 4 steps over [0, v].
function niceScale(v) {
  if (!(v > 0)) return { step: 0.25, max: 1 };
  const raw = v / 4;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  let step = 10 * p;
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) { step = m * p; break; }
  return { step, max: Math.max(step, Math.ceil(v / step - 1e-9) * step) };
}
const $ = (id) => document.getElementById(id);
function setText(id, text) { const el = $(id); if (el && el.textContent !== text) el.textContent = text; }

// ---------- a small line chart ----------
class LineChart {
  constructor(canvas, opts) {
    this.canvas = canvas;
    this.series = opts.series;       // [{key, label, color, fill}]
    this.format = opts.format || fmtNum;
    this.threshold = null;
    this.points = [];                // [{t, values: {key: number|null}}]
    new ResizeObserver(() => this.draw()).observe(canvas);
  }
  reset() { this.points = []; }
  push(t, values) {
    const last = this.points[this.points.length - 1];
    if (last && t <= last.t) return;
    this.points.push({ t, values });
    if (this.points.length > KEEP) this.points.shift();
    this.canvas.dataset.points = String(this.points.length);
    if (this.series.some((s) => values[s.key] !== null && values[s.key] !== undefined)) this.canvas.dataset.values = String(Number(this.canvas.dataset.values || 0) + 1);
    const latest = this.series.map((s) => values[s.key]);
    this.canvas.dataset.latest = latest.map((v) => (v === null || v === undefined ? "" : String(v))).join(",");
  }
  draw() {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const left = 54, right = 10, top = 22, bottom = 20;
    const pw = w - left - right, ph = h - top - bottom;
    const now = this.points.length ? this.points[this.points.length - 1].t : Date.now();
    const t0 = now - WINDOW_SECS * 1000;
    const visible = this.points.filter((p) => p.t >= t0);
    let max = 0;
    for (const p of visible) for (const s of this.series) { const v = p.values[s.key]; if (v > max) max = v; }
    if (this.threshold !== null) max = Math.max(max, this.threshold * 1.15);
    const scale = niceScale(max * 1.05);
    max = scale.max;
    const x = (t) => left + ((t - t0) / (WINDOW_SECS * 1000)) * pw;
    const y = (v) => top + ph - (v / max) * ph;

    // grid and labels
    g.font = "11px system-ui, sans-serif";
    g.textBaseline = "middle";
    for (let i = 0; i * scale.step <= max + 1e-9; i++) {
      const v = i * scale.step, yy = Math.round(y(v)) + 0.5;
      g.strokeStyle = i === 0 ? "#33404f" : "#222b37";
      g.lineWidth = 1;
      g.beginPath(); g.moveTo(left, yy); g.lineTo(left + pw, yy); g.stroke();
      g.fillStyle = "#7d8896"; g.textAlign = "right";
      g.fillText(this.format(v), left - 6, yy);
    }
    g.textAlign = "center"; g.textBaseline = "top";
    for (let s = 0; s <= WINDOW_SECS; s += 30) {
      const xx = x(t0 + s * 1000);
      g.fillStyle = "#7d8896";
      g.fillText(s === WINDOW_SECS ? "now" : `-${WINDOW_SECS - s}s`, xx, top + ph + 5);
    }

    // threshold
    if (this.threshold !== null) {
      const yy = y(this.threshold);
      g.save(); g.setLineDash([5, 4]); g.strokeStyle = "#ff5d5d"; g.lineWidth = 1.2;
      g.beginPath(); g.moveTo(left, yy); g.lineTo(left + pw, yy); g.stroke(); g.restore();
      g.fillStyle = "#ff5d5d"; g.textAlign = "left"; g.textBaseline = "bottom";
      g.fillText(`threshold ${this.threshold}`, left + 4, yy - 2);
    }

    // series
    for (const s of this.series) {
      const pts = visible.filter((p) => p.values[s.key] !== null && p.values[s.key] !== undefined);
      if (!pts.length) continue;
      g.beginPath();
      pts.forEach((p, i) => { const xx = x(p.t), yy = y(p.values[s.key]); i ? g.lineTo(xx, yy) : g.moveTo(xx, yy); });
      g.strokeStyle = s.color; g.lineWidth = 1.8; g.lineJoin = "round"; g.stroke();
      if (s.fill) {
        g.lineTo(x(pts[pts.length - 1].t), y(0)); g.lineTo(x(pts[0].t), y(0)); g.closePath();
        const grad = g.createLinearGradient(0, top, 0, top + ph);
        grad.addColorStop(0, s.color + "55"); grad.addColorStop(1, s.color + "05");
        g.fillStyle = grad; g.fill();
      }
    }

    // legend with latest values
    let lx = left + pw;
    g.textBaseline = "top"; g.textAlign = "right"; g.font = "12px system-ui, sans-serif";
    const last = visible[visible.length - 1];
    for (const s of [...this.series].reverse()) {
      const v = last ? last.values[s.key] : null;
      const text = `${s.label} ${v === null || v === undefined ? "–" : this.format(v)}`;
      g.fillStyle = "#d7dde5"; g.fillText(text, lx, 3);
      const tw = g.measureText(text).width;
      g.fillStyle = s.color; g.fillRect(lx - tw - 12, 7, 8, 8);
      lx -= tw + 26;
    }
  }
}

const charts = {
  rps: new LineChart($("chart-rps"), { series: [{ key: "rps", label: "req/s", color: "#4ea1ff", fill: true }] }),
  latency: new LineChart($("chart-latency"), { format: fmtMsShort, series: [
    { key: "mean", label: "mean", color: "#4ea1ff", fill: true },
    { key: "p99", label: "p99", color: "#b48cff" }] }),
  db: new LineChart($("chart-db"), { format: fmtMsShort, series: [
    { key: "mean", label: "mean", color: "#3ccf8e", fill: true },
    { key: "p99", label: "p99", color: "#ffb547" }] }),
  errors: new LineChart($("chart-errors"), { series: [{ key: "epm", label: "errors/min", color: "#ff5d5d", fill: true }] }),
};
function fmtMsShort(v) {
  if (v === 0) return "0";
  if (v >= 1000) return +(v / 1000).toFixed(2) + "s";
  return (v >= 10 ? Math.round(v) : +v.toFixed(2)) + "ms";
}

function addSummary(s) {
  if (!s) return;
  const t = s.at_ms;
  charts.rps.push(t, { rps: s.requests_per_sec });
  charts.latency.push(t, { mean: s.latency_ms ? s.latency_ms.mean : null, p99: s.latency_ms ? s.latency_ms.p99 : null });
  charts.db.push(t, { mean: s.db_ms ? s.db_ms.mean : null, p99: s.db_ms ? s.db_ms.p99 : null });
  charts.errors.push(t, { epm: s.errors_last_min });
}

// ---------- tables ----------
function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c);
    else if (c && typeof c === "object") { td.textContent = c.text; if (c.cls) td.className = c.cls; if (c.title) td.title = c.title; }
    else td.textContent = c === null || c === undefined ? "" : String(c);
    tr.appendChild(td);
  }
  return tr;
}
function fill(tableId, rows, emptyText, cols) {
  const body = $(tableId).tBodies[0];
  const frag = document.createDocumentFragment();
  if (!rows.length && emptyText) {
    const tr = row([emptyText]); tr.className = "empty"; tr.firstChild.colSpan = cols; frag.appendChild(tr);
  }
  rows.forEach((r) => frag.appendChild(r));
  body.replaceChildren(frag);
}
function bar(queued, capacity) {
  const wrap = document.createElement("span");
  const b = document.createElement("span"); b.className = "bar";
  const i = document.createElement("span"); i.style.width = Math.min(100, (queued / Math.max(1, capacity)) * 100) + "%";
  b.appendChild(i); wrap.appendChild(b); wrap.appendChild(document.createTextNode(`${queued}/${capacity}`));
  return wrap;
}

function render(snap) {
  const s = snap.summary;
  setText("uptime", fmtDur(snap.uptime_s));
  if (s) {
    setText("kpi-rps", fmtNum(s.requests_per_sec));
    setText("kpi-requests", fmtNum(s.totals.requests));
    setText("kpi-latency", s.latency_ms ? fmtMs(s.latency_ms.mean) : "–");
    setText("kpi-p50", s.latency_ms ? fmtMs(s.latency_ms.p50) : "–");
    setText("kpi-p99", s.latency_ms ? fmtMs(s.latency_ms.p99) : "–");
    setText("kpi-max", s.latency_ms ? fmtMs(s.latency_ms.max) : "–");
    setText("kpi-db", s.db_ms ? fmtMs(s.db_ms.mean) : "–");
    setText("kpi-db-p99", s.db_ms ? fmtMs(s.db_ms.p99) : "–");
    setText("kpi-queries", fmtNum(s.totals.db_queries));
    setText("kpi-errors-total", fmtNum(s.totals.errors));
  }
  const a = snap.alert;
  setText("kpi-errors", String(a.rate));
  setText("kpi-threshold", String(a.threshold));
  $("kpi-errors").parentElement.classList.toggle("alarm", a.firing);
  const banner = $("alert-banner");
  banner.className = "pill " + (a.firing ? "bad" : "ok");
  banner.textContent = a.firing ? `ALERT: ${a.rate} errors/min (> ${a.threshold})` : "error rate normal";
  charts.errors.threshold = a.threshold;
  setText("kpi-ingested", String(snap.ingested));
  setText("kpi-rejected", String(snap.rejected));
  const bus = snap.bus;
  setText("kpi-events", fmtNum(bus.published));
  setText("kpi-dropped", fmtNum(bus.dropped));

  fill("alerts", snap.alerts.map((al) => row([fmtTime(al.at_ms), { text: al.state, cls: "state " + al.state }, al.rate !== undefined ? `${al.rate}/min` : `${al.rule}: ${al.value ?? "no data"}`, { text: al.text, title: al.text }])), "no alerts yet", 4);
  const wh = snap.webhook;
  setText("webhook", wh ? `webhook ${wh.url}: ${wh.delivered} delivered, ${wh.failed} failed, ${wh.dropped} dropped, ${wh.rejected} refused by the breaker (${wh.breaker})${wh.last_error ? " · last error: " + wh.last_error : ""}` : "no webhook (--alert-webhook URL)");
  fill("recent-errors", snap.recent_errors.slice(0, 10).map((e) => row([fmtTime(e.at_ms), e.source, { text: e.message, title: e.message }])), "none", 3);

  const totals = $("bus-totals");
  const items = [["published", bus.published], ["delivered", bus.delivered], ["dropped", bus.dropped], ["unrouted", bus.unrouted], ["subscribers", bus.subscribers.length]];
  totals.replaceChildren(...items.map(([k, v]) => { const sp = document.createElement("span"); sp.append(k + " "); const b = document.createElement("b"); b.textContent = fmtNum(v); sp.appendChild(b); return sp; }));
  fill("subscribers", bus.subscribers.map((sub) => row([sub.name, sub.pattern, sub.policy, bar(sub.queued, sub.capacity), fmtNum(sub.delivered), fmtNum(sub.received),
    { text: fmtNum(sub.dropped), cls: sub.dropped ? "state firing" : "" }, fmtMs(sub.blocked)])), "no subscribers", 8);
  fill("modules", snap.modules.map((m) => row([m.name, { text: m.state, cls: "state " + m.state },
    m.uptime ? fmtDur(m.uptime.secs) : "–", m.restarts, { text: m.last_error || "", title: m.last_error || "" }])), "none", 5);
  const st = snap.settings;
  setText("settings", `${st.simulate ? `simulated services every ${st.interval_ms} ms, error rate ${st.error_rate}` : "no simulated services"} · alert above ${st.alert_threshold}/min · log: ${st.log}`);
}

// ---------- every series: list, filter, picked charts ----------
const HISTORY_SERIES = 500;  // series whose recent points the page keeps (to chart at once when picked)
const seriesHistory = new Map(); // key -> [{t, values}]
const picked = new Map();        // key -> {fig, chart}
let lastSeries = [];
const seriesKey = (s) => s.source + "\u0000" + s.series;
// What a series' chart shows, by kind: [{key, label, color, fill}] and its values from one snapshot.
function chartSpec(kind) {
  switch (kind) {
    case "gauge": return [{ key: "value", label: "value", color: "#3ccf8e", fill: true }];
    case "observation": case "histogram": return [
      { key: "mean", label: "mean", color: "#4ea1ff", fill: true },
      { key: "p99", label: "p99", color: "#b48cff" }];
    case "set": return [{ key: "distinct", label: "distinct/s", color: "#ffb547", fill: true }];
    case "error": return [{ key: "rate", label: "errors/s", color: "#ff5d5d", fill: true }];
    default: return [{ key: "rate", label: "per s", color: "#4ea1ff", fill: true }];
  }
}
function chartValues(s) {
  const sec = s.second;
  return { rate: sec.rate, value: s.value ?? sec.last ?? null, mean: sec.mean ?? null, p99: sec.p99 ?? null, distinct: sec.distinct ?? 0 };
}
function pick(s) {
  const key = seriesKey(s);
  if (picked.has(key)) { picked.get(key).fig.remove(); picked.delete(key); return; }
  const fig = document.createElement("figure");
  fig.className = "card";
  fig.dataset.series = key;
  const cap = document.createElement("figcaption");
  cap.textContent = `${s.source} / ${s.series} (${s.kind})`;
  const canvas = document.createElement("canvas");
  fig.append(cap, canvas);
  $("picked").appendChild(fig);
  const chart = new LineChart(canvas, { series: chartSpec(s.kind), format: fmtNum });
  for (const p of seriesHistory.get(key) || []) chart.push(p.t, p.values);
  picked.set(key, { fig, chart });
  chart.draw();
}
function renderSeries(snap) {
  const list = Array.isArray(snap.series) ? snap.series : [];
  const status = snap.series_status;
  lastSeries = list;
  if (status) {
    const t = status.at_ms;
    // Histories of series gone from the list, or silent for the chart's
    // window, make room for new ones (unless picked).
    const live = new Set(list.map(seriesKey));
    for (const [k, h] of seriesHistory) {
      const stale = !h.length || h[h.length - 1].t < t - WINDOW_SECS * 1000;
      if (!picked.has(k) && (!live.has(k) || stale)) seriesHistory.delete(k);
    }
    for (const s of list) {
      const key = seriesKey(s);
      let h = seriesHistory.get(key);
      if (!h) { if (seriesHistory.size >= HISTORY_SERIES) continue; h = []; seriesHistory.set(key, h); }
      const values = chartValues(s);
      if (!h.length || h[h.length - 1].t < t) { h.push({ t, values }); if (h.length > WINDOW_SECS) h.shift(); }
      const p = picked.get(key);
      if (p) p.chart.push(t, values);
    }
    const o = status.overflow;
    setText("series-status", `${status.count} of at most ${o.max_series} series` +
      (o.samples ? ` · ${o.samples} samples of new series over the cap (${Object.entries(o.by_name).map(([k, v]) => `${k}: ${v}`).join(", ")}${o.other_names ? `, others: ${o.other_names}` : ""})` : "") +
      (status.too_old ? ` · ${status.too_old} too old` : "") + (status.missed ? ` · missed ${status.missed}` : ""));
  } else {
    setText("series-status", "this process keeps no series (no dashboard module)");
  }
  drawSeriesTable();
  $("picked-empty").style.display = picked.size ? "none" : "";
  for (const p of picked.values()) p.chart.draw();
}
function drawSeriesTable() {
  const words = $("series-filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  const shown = lastSeries.filter((s) => {
    const text = (s.source + " " + s.series + " " + s.kind).toLowerCase();
    return words.every((w) => text.includes(w));
  });
  setText("series-count", `${shown.length} of ${lastSeries.length}`);
  fill("series", shown.slice(0, 1000).map((s) => {
    const value = s.kind === "gauge" ? s.value : s.kind === "set" ? s.minute.distinct : s.kind === "error" ? null : s.minute.mean;
    const tr = row([s.source, { text: s.series, title: s.series }, s.kind, fmtNum(s.second.rate), fmtNum(s.minute.count),
      s.kind === "error" ? { text: s.last_message || "", title: s.last_message || "" } : fmtNum(value), fmtNum(s.minute.p99)]);
    tr.dataset.series = seriesKey(s);
    if (picked.has(tr.dataset.series)) tr.className = "picked";
    tr.addEventListener("click", () => { pick(s); drawSeriesTable(); $("picked-empty").style.display = picked.size ? "none" : ""; });
    return tr;
  }), lastSeries.length ? "no series match the filter" : "no series yet", 7);
}
$("series-filter").addEventListener("input", drawSeriesTable);

// ---------- alert rules and ingest ----------
function renderRules(snap) {
  let rules = Array.isArray(snap.rules) ? snap.rules : null;
  if (!rules) {
    const a = snap.alert;
    rules = [{ name: "errors", state: a.firing ? "firing" : "ok", value: `${a.rate}/min`, expr: `errors in the last minute > ${a.threshold}` }];
  }
  fill("rules", rules.map((r) => row([r.name, { text: r.state, cls: "state " + r.state },
    typeof r.value === "number" ? fmtNum(r.value) : (r.value ?? "–"), { text: r.expr || "", title: r.expr || "" }])), "no rules", 4);
}
function renderIngest(snap) {
  const ing = snap.ingest;
  if (!ing) return;
  const protos = ["statsd", "otlp", "api", "scrape"];
  fill("ingest", protos.map((p) => { const c = ing[p]; return row([p, fmtNum(c.received), fmtNum(c.accepted),
    { text: fmtNum(c.malformed), cls: c.malformed ? "state firing" : "" }, { text: fmtNum(c.kernel_dropped), cls: c.kernel_dropped ? "state firing" : "" }]); }), "", 5);
  const parts = [];
  for (const p of protos) {
    const c = ing[p];
    const reasons = Object.entries(c.malformed_by_reason || {}).map(([k, v]) => `${k}: ${v}`);
    if (reasons.length) parts.push(`${p} malformed: ${reasons.join(", ")}` + (c.examples && c.examples.length ? ` (e.g. "${c.examples[0].input}")` : ""));
  }
  const targets = ing.targets || [];
  const up = targets.filter((t) => t.up).length;
  parts.push(`scrape targets: ${up} up, ${targets.length - up} down` + targets.filter((t) => !t.up).map((t) => ` · ${t.url} down${t.last_error ? ": " + t.last_error : ""}`).join(""));
  setText("ingest-details", parts.join(" · "));
}

function drawAll() { for (const c of Object.values(charts)) c.draw(); }

// ---------- live updates ----------
$("metrics-link").href = withToken("/metrics");
$("summary-link").href = withToken("/api/summary");
function connect() {
  const es = new EventSource(withToken("/api/stream"));
  const conn = $("conn");
  es.addEventListener("snapshot", (ev) => {
    const snap = JSON.parse(ev.data);
    if (Array.isArray(snap.history)) {
      for (const c of Object.values(charts)) c.reset();
      snap.history.forEach(addSummary);
    }
    addSummary(snap.summary);
    render(snap);
    renderSeries(snap);
    renderRules(snap);
    renderIngest(snap);
    drawAll();
    conn.className = "pill live"; conn.textContent = "live";
  });
  es.onerror = () => { conn.className = "pill off"; conn.textContent = "reconnecting…"; };
}
connect();
