// Switchboard dashboard: one websocket to the node (/ws), redrawn on every
// message (at least once a second). No framework, no build step; charts by
// the vendored uPlot. Every number is explained in docs/operations.md.
"use strict";

const MAX_POINTS = 300;            // five minutes at one point a second
const $ = (id) => document.getElementById(id);
const fmt = (x) => (x === null || x === undefined) ? "–"
  : Number(x).toLocaleString(undefined, {maximumFractionDigits: Math.abs(x) < 1 ? 2 : Math.abs(x) < 10 ? 1 : 0});
const clock = (t) => new Date(t * 1000).toLocaleTimeString();

// -- charts -------------------------------------------------------------------
const RATE_SERIES = [
  ["frames_in", "frames in", "#1565c0"], ["frames_out", "frames out", "#64b5f6"],
  ["messages_in", "messages in", "#2e7d32"], ["messages_out", "messages out", "#81c784"],
  ["store_ops", "store ops", "#ef6c00"],
];
const QUEUE_SERIES = [["queued", "total queued", "#6a1b9a"], ["max_queue", "longest mailbox", "#c62828"]];
const points = [];
const charts = {};

function makeChart(el, series) {
  const opts = {
    width: Math.max(300, el.clientWidth), height: 220,
    series: [{}, ...series.map(([, label, stroke]) => ({label, stroke, width: 2, value: (u, v) => fmt(v)}))],
    axes: [{}, {size: 60, values: (u, vals) => vals.map(fmt)}],
    scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(1, max * 1.1)]}},
    legend: {live: true},
  };
  return new uPlot(opts, [[], ...series.map(() => [])], el);
}

function chartData(series) {
  return [points.map((p) => p.t), ...series.map(([key]) => points.map((p) => p[key] ?? null))];
}

function redrawCharts() {
  if (!window.uPlot) return;
  if (!charts.rates) {
    charts.rates = makeChart($("chart-rates"), RATE_SERIES);
    charts.queues = makeChart($("chart-queues"), QUEUE_SERIES);
  }
  charts.rates.setData(chartData(RATE_SERIES));
  charts.queues.setData(chartData(QUEUE_SERIES));
}

window.addEventListener("resize", () => {
  for (const [name, el] of [["rates", "chart-rates"], ["queues", "chart-queues"]]) {
    if (charts[name]) charts[name].setSize({width: Math.max(300, $(el).clientWidth), height: 220});
  }
});

// -- tables ---------------------------------------------------------------------
function fill(tableId, rows, rowClass) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows.map((cells, i) => {
    const tr = document.createElement("tr");
    const cls = rowClass ? rowClass(i) : "";
    if (cls) tr.className = cls;
    for (const cell of cells) {
      const td = document.createElement("td");
      if (typeof cell === "string") { td.className = "text"; td.textContent = cell; td.title = cell; }
      else if (cell && typeof cell === "object" && "text" in cell) { td.textContent = cell.text; td.title = cell.title || ""; }
      else if (cell && typeof cell === "object") td.textContent = String(cell.id ?? "–");  // ids: no separators
      else td.textContent = fmt(cell);
      tr.appendChild(td);
    }
    return tr;
  }));
}

function list(id, items, cls) {
  $(id).replaceChildren(...items.map((text, i) => {
    const li = document.createElement("li");
    li.textContent = text;
    if (cls) li.className = cls(i);
    return li;
  }));
}

// -- one status message -----------------------------------------------------------
function render(view) {
  const t = view.totals, r = t.rates, store = view.storage, off = view.offline;
  $("node-name").textContent = `node ${view.node.name}`;
  $("updated").textContent = `updated ${clock(view.at)}`;
  $("t-workers").textContent = `${t.up} / ${t.workers}`;
  $("t-actors").textContent = fmt(t.actors);
  $("t-queued").textContent = fmt(t.queued);
  $("t-maxq").textContent = fmt(t.max_queue);
  $("t-conns").textContent = fmt(t.connections);
  $("t-frames").textContent = `${fmt(r.frames_in)} / ${fmt(r.frames_out)}`;
  $("t-msgs").textContent = `${fmt(r.messages_in)} / ${fmt(r.messages_out)}`;
  $("t-store").textContent = `${fmt(r.store_ops)} / ${fmt(r.commits)}`;
  $("t-commit").textContent = store ? `${store.median_commit_ms.toFixed(1)} / ${store.p99_commit_ms.toFixed(1)}` : "–";
  $("t-offline").textContent = off ? `${fmt(off.messages)} (${fmt(off.users)})` : "–";

  // In a cluster the banner lists every node's alerts, each with its node's name.
  const cluster = view.cluster;
  const alerts = cluster ? cluster.alerts : view.alerts;
  const where = (a) => cluster ? `node ${a.node} worker ${a.worker}` : `worker ${a.worker}`;
  const banner = $("alerts");
  banner.className = "alerts " + (alerts.length ? "active" : "none");
  $("alerts-title").textContent = alerts.length
    ? `${alerts.length} active alert${alerts.length > 1 ? "s" : ""}` : "No active alerts";
  list("alerts-list", alerts.map((a) => `${where(a)}: ${a.text} — for ${fmt(a.for_s)} s, peak ${fmt(a.peak)}`));
  renderCluster(cluster);

  const high = view.thresholds ? view.thresholds.actor_high : Infinity;
  fill("workers", view.workers.map((w) => w.up
    ? [{id: w.slot}, {id: w.pid}, {id: w.port}, w.actors, w.queued, w.max_queue, w.connections,
       w.rates.frames_in, w.rss_bytes / 1048576, w.loop_lag_ms, w.sample_ms,
       w.mesh ? `${fmt(w.mesh.sent_items)} / ${fmt(w.mesh.received_items)}` : "–",
       w.alerts ? `${w.alerts} alert(s)` : "up"]
    : [{id: w.slot}, {id: null}, {id: w.port}, "", "", "", "", "", "", "", "", "", `down: ${w.error || "?"}`]),
    (i) => view.workers[i].up ? (view.workers[i].alerts ? "hot" : "") : "down");
  fill("top", view.top.map((row) => [row.queue, row.actor, {id: row.worker}]),
    (i) => view.top[i].queue >= high ? "hot" : "");
  fill("kinds", Object.entries(view.kinds).map(([kind, k]) => [kind, k.count, k.queued, k.max]));
  fill("restarts", view.restarts.map((x) => [x.supervisor, x.child, {id: x.worker}, x.count]));
  list("recent-restarts", view.recent_restarts.map(
    (x) => `${clock(x.at)} w${x.worker} ${x.supervisor} restarted ${x.child}: ${x.reason}`));
  list("alert-events", view.alert_events.map((e) => `${clock(e.at)} w${e.worker} ${e.state}: ${e.text}`),
    (i) => view.alert_events[i].state);
  const th = view.thresholds;
  $("thresholds").textContent = th ? `actor alert at ≥ ${fmt(th.actor_high)} for ${th.sustain} s, clears at ≤ ${fmt(th.actor_low)}; `
    + `worker alert at ≥ ${fmt(th.worker_high)}, clears at ≤ ${fmt(th.worker_low)}` : "";
}

// Items queued here for node n, and the group items folded for it past outq_high
// (beside the queue: each fold is queued as one MISSED item when room comes back).
function queuedTo(n) {
  if (n.queued_to === null || n.queued_to === undefined) return "–";
  if (!n.folded_to) return n.queued_to;
  return {text: `${fmt(n.queued_to)} (+${fmt(n.folded_to)} folded)`,
          title: `${fmt(n.queued_to)} items queued; ${fmt(n.folded_to)} group messages and events `
            + "folded past outq_high, queued as one MISSED per member and group when there is room"};
}

// The Cluster table: one row per node, hidden on a standalone node.
function renderCluster(cluster) {
  $("cluster-panel").hidden = !cluster;
  if (!cluster) return;
  $("cluster-title").textContent = `Cluster: ${cluster.up} of ${cluster.nodes.length} nodes up`;
  fill("cluster", cluster.nodes.map((n) => {
    const s = n.summary, q = s && s.outq;
    const state = n.state === "up" ? (n.self ? "up (this node)" : "up")
      : n.state === "down" ? "down" : `${n.state}: ${n.error || "?"}`;
    return s
      ? [n.name, state, n.client || "–", s.connections, s.actors, s.max_queue,
         `${fmt(s.messages_in)} / ${fmt(s.messages_out)}`, queuedTo(n),
         q ? `${fmt(q.shipped_items)} / ${fmt(q.applied_items)}` : "–", s.alerts.length]
      : [n.name, state, n.client || "–", "", "", "", "", queuedTo(n), "", ""];
  }), (i) => {
    const n = cluster.nodes[i];
    return n.state !== "up" ? "down" : (n.summary && n.summary.alerts.length ? "hot" : "");
  });
}

// -- the websocket ----------------------------------------------------------------
let backoff = 250;

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws`);
  ws.onopen = () => { backoff = 250; $("conn").textContent = "live"; $("conn").className = "conn up"; };
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "history") {
      points.splice(0, points.length, ...msg.points.slice(-MAX_POINTS));
    } else if (msg.type === "status") {
      render(msg.node);
      if (msg.node.totals.up) {
        const t = msg.node.totals;
        points.push({t: msg.node.at, ...t.rates, queued: t.queued, max_queue: t.max_queue});
        if (points.length > MAX_POINTS) points.splice(0, points.length - MAX_POINTS);
      }
    }
    redrawCharts();
  };
  ws.onclose = () => {
    $("conn").textContent = "reconnecting"; $("conn").className = "conn down";
    setTimeout(connect, backoff);
    backoff = Math.min(5000, backoff * 2);
  };
}

connect();
