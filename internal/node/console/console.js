// The shoal console: it reads /status (with the vBucket map and every
// member's seqnos) every few seconds and redraws the page. Plain script,
// no library; every value from the status document is set as text.
"use strict";

const REFRESH_MS = 3000;
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#d62728",
  "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"];
const ENGINES = ["kv", "queue", "log"];

let lastOK = 0;
let colours = {};
let latest = null;

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, cls) {
  const tr = el("tr", null, cls);
  for (const c of cells) {
    if (c instanceof Node) {
      const td = el("td");
      td.appendChild(c);
      tr.appendChild(td);
    } else if (c && typeof c === "object") {
      const td = el("td", c.text, c.cls);
      if (c.title) td.title = c.title;
      tr.appendChild(td);
    } else {
      tr.appendChild(el("td", c === undefined || c === null || c === "" ? "-" : c));
    }
  }
  return tr;
}

function fill(tableId, rows, emptyText) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = el("tr");
    const td = el("td", emptyText, "muted");
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    tr.appendChild(td);
    body.appendChild(tr);
    return;
  }
  for (const r of rows) body.appendChild(r);
}

const num = (v) => ({ text: v === undefined || v === null ? "-" : Number(v).toLocaleString("en"), cls: "n" });

function bytes(b) {
  if (b === undefined || b === null) return "-";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(b);
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + u[i];
}

function duration(s) {
  if (s === undefined || s === null || isNaN(s)) return "-";
  s = Number(s);
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 0) + " ms";
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), sec = Math.floor(s % 60);
  if (d > 0) return d + "d " + h + "h";
  if (h > 0) return h + "h " + m + "m";
  return m + "m " + sec + "s";
}

// ago renders an RFC 3339 time as "3m 12s ago", with the local time as a
// tooltip.
function ago(t) {
  if (!t) return { text: "-" };
  const d = new Date(t);
  if (isNaN(d.getTime()) || d.getFullYear() < 2000) return { text: "-" };
  const s = (Date.now() - d.getTime()) / 1000;
  return { text: s >= 0 ? duration(s) + " ago" : "in " + duration(-s), title: d.toLocaleString() };
}

function colourOf(node) {
  if (!(node in colours)) colours[node] = PALETTE[Object.keys(colours).length % PALETTE.length];
  return colours[node];
}

function swatch(node) {
  const s = el("span", null, "swatch");
  s.style.background = colourOf(node);
  return s;
}

function refresh() {
  fetch("/status?map=1&copies=1", { cache: "no-store", credentials: "same-origin" })
    .then((r) => {
      if (!r.ok) throw new Error("/status answered " + r.status + " " + r.statusText);
      return r.json();
    })
    .then((st) => {
      latest = st;
      lastOK = Date.now();
      $("problem").hidden = true;
      try {
        render(st);
      } catch (e) {
        problem("cannot draw /status (a bug of this page): " + e.message);
      }
    }, (e) => {
      problem("cannot read /status: " + e.message + (lastOK ? " (showing what it said " + duration((Date.now() - lastOK) / 1000) + " ago)" : ""));
    })
    .finally(() => {
      $("updated").textContent = lastOK ? "updated " + new Date(lastOK).toLocaleTimeString() + ", every " + REFRESH_MS / 1000 + " s" : "";
      setTimeout(refresh, REFRESH_MS);
    });
}

function problem(text) {
  $("problem").hidden = false;
  $("problem").textContent = text;
}

function render(st) {
  const c = st.cluster;
  document.title = "shoal " + (st.node_id || "") + (c && c.cluster_id ? " · " + c.cluster_id : "");
  $("title").textContent = "shoal · node " + (st.node_id || "?");
  const ready = st.readiness && st.readiness.ready;
  $("summary").replaceChildren(
    el("span", "version " + (st.version || "-") + " · data port " + (st.listen || "-") + " · up " + duration(st.uptime_seconds) +
      " · " + (st.connections || 0) + (st.connections === 1 ? " connection" : " connections") + " · " + (st.vbuckets || "-") + " vBuckets · "),
    el("span", ready ? "ready" : "not ready" + (st.readiness && st.readiness.missing ? ": " + st.readiness.missing.join("; ") : ""), ready ? "good" : "bad"));
  for (const n of (c && c.nodes) || []) colourOf(n.id);
  renderCluster(st);
  renderMap(st);
  renderReplication(st);
  renderEvents(st);
  renderChannels(st);
  renderDumps(st);
  renderDiscovery(st);
}

function livenessOf(st, node) {
  const rep = st.leader_liveness || st.liveness;
  if (!rep || !rep.nodes) return { text: "-" };
  for (const n of rep.nodes) {
    if (n.node === node.id || n.node === node.addr) {
      let text = n.state || "-";
      if (n.seconds_since_last_heard !== undefined && n.seconds_since_last_heard !== null) text += ", heard " + duration(n.seconds_since_last_heard) + " ago";
      if (n.local) text += " (itself)";
      return { text, cls: n.state === "active" || n.state === "ready" ? "" : "warn" };
    }
  }
  return { text: "not monitored", cls: "muted" };
}

function renderCluster(st) {
  const c = st.cluster;
  if (!c) {
    const r = st.replication || {};
    $("cluster-line").textContent = r.replica_of ? "standby of " + r.replica_of + ": in no cluster" : "in no cluster" + (r.promoted_from ? " (a promoted standby of " + r.promoted_from + ")" : "");
    fill("nodes", [], "no cluster");
    return;
  }
  const parts = ["cluster " + (c.cluster_id || "not created yet"), "map revision " + (c.revision || 0), (c.replicas || 0) + (c.replicas === 1 ? " replica" : " replicas"),
    "leader " + (c.leader ? c.leader + " at " + c.leader_addr : "none known"),
    "this node " + (c.raft_state || "-") + ", " + ((c.voters || []).length) + " of " + (c.want_voters || "-") + " voters",
    (c.leader_changes || 0) + " leader changes", (c.failovers || 0) + " failovers"];
  if (c.join && c.join.phase && c.join.phase !== "member") parts.push(c.join.phase + (c.join.waiting ? ": " + c.join.waiting : ""));
  $("cluster-line").textContent = parts.join(" · ");
  if (c.fenced) $("cluster-line").appendChild(el("span", " · fenced: " + c.fenced, "bad"));
  const rows = [];
  for (const n of c.nodes || []) {
    const name = el("span");
    name.appendChild(swatch(n.id));
    if (n.http) {
      const a = el("a", n.id);
      a.href = "http://" + n.http + "/";
      name.appendChild(a);
    } else {
      name.appendChild(document.createTextNode(n.id));
    }
    if (n.id === st.node_id) name.appendChild(document.createTextNode(" (this node)"));
    const role = n.leader ? "leader" : n.voter ? "voter" : "non-voter";
    const tr = row([name, n.addr, { text: n.state, cls: n.state === "active" ? "" : n.state === "failed" ? "bad" : "warn" }, role, livenessOf(st, n),
      num(n.active_vbuckets), num(n.replica_vbuckets), n.zone, ago(n.since).title ? { text: ago(n.since).text.replace(/ ago$/, ""), title: ago(n.since).title } : "-"],
    n.id === st.node_id ? "self" : "");
    tr.dataset.node = n.id;
    rows.push(tr);
  }
  fill("nodes", rows, "no members yet");
}

// seqnoOf is node's high seqno of vb for engine e, undefined if unknown.
function seqnoOf(st, node, e, vb) {
  const per = st.copies && st.copies[node];
  const s = per && per[e];
  return s && vb < s.length ? s[vb] : undefined;
}

// lagOf is how many mutations the copies of a chain are behind its
// active, summed over the engines (undefined without the seqnos).
function lagOf(st, chain, vb) {
  if (!st.copies || chain.length < 2) return undefined;
  let worst;
  for (const replica of chain.slice(1)) {
    let behind = 0, known = false;
    for (const e of ENGINES) {
      const a = seqnoOf(st, chain[0], e, vb), r = seqnoOf(st, replica, e, vb);
      if (a === undefined || r === undefined) continue;
      known = true;
      behind += Math.max(a - r, 0);
    }
    if (known) worst = Math.max(worst || 0, behind);
  }
  return worst;
}

function renderMap(st) {
  const m = st.map;
  const grid = $("vbmap");
  if (!m || !m.vbuckets) {
    $("map-line").textContent = "no vBucket map yet";
    grid.replaceChildren();
    $("legend").replaceChildren();
    return;
  }
  const counts = {};
  let none = 0, lagging = 0, short = 0;
  const cells = [];
  m.vbuckets.forEach((v, vb) => {
    const chain = v.chain || [];
    const cell = el("div", null, "cell");
    cell.dataset.vb = vb;
    cell.setAttribute("role", "gridcell");
    if (chain.length === 0) {
      cell.classList.add("none");
      cell.dataset.active = "";
      none++;
    } else {
      cell.style.background = colourOf(chain[0]);
      cell.dataset.active = chain[0];
      counts[chain[0]] = (counts[chain[0]] || 0) + 1;
    }
    if (chain.length > 0 && chain.length < 1 + (m.replicas || 0)) {
      cell.classList.add("short");
      short++;
    }
    const lag = lagOf(st, chain, vb);
    if (lag > 0) {
      cell.classList.add("lag");
      lagging++;
    }
    cell.setAttribute("aria-label", "vBucket " + vb + ": " + (chain.length ? chain.join(" → ") : "no copy"));
    cells.push(cell);
  });
  grid.replaceChildren(...cells);
  const legend = [];
  for (const node of Object.keys(counts).sort()) {
    const item = el("span", null, "item");
    item.appendChild(swatch(node));
    item.appendChild(document.createTextNode(node + " active for " + counts[node]));
    legend.push(item);
  }
  if (none) legend.push(el("span", none + " without a copy", "item bad"));
  $("legend").replaceChildren(...legend);
  const replicated = m.vbuckets.some((v) => (v.chain || []).length > 1);
  const parts = [m.vbuckets.length + " vBuckets", "revision " + m.revision, (m.replicas || 0) + (m.replicas === 1 ? " replica" : " replicas") + " wanted"];
  if (short) parts.push(short + " short of copies (faded)");
  if (!replicated) parts.push("no vBucket has a replica");
  else if (st.copies) parts.push(lagging ? lagging + " with a copy behind its active (red outline)" : "every copy caught up");
  else parts.push("no seqnos of the copies");
  if (st.copies_errors) parts.push("no seqnos from " + Object.keys(st.copies_errors).join(", "));
  $("map-line").textContent = parts.join(" · ") + " · hover a cell for its chain";
}

function showTip(ev) {
  const cell = ev.target;
  if (!cell.classList || !cell.classList.contains("cell") || !latest || !latest.map) return;
  const vb = Number(cell.dataset.vb);
  const v = latest.map.vbuckets[vb];
  if (!v) return;
  const tip = $("tip");
  const chain = v.chain || [];
  tip.replaceChildren(el("div", "vBucket " + vb + " · epoch " + v.epoch), el("div", chain.length ? "chain " + chain.join(" → ") : "no copy: every copy was lost"));
  if (chain.length && latest.copies) {
    const t = el("table");
    const head = el("tr");
    head.appendChild(el("th", "copy"));
    for (const e of ENGINES) head.appendChild(el("th", e + " seqno"));
    t.appendChild(head);
    chain.forEach((node, i) => {
      const tr = el("tr");
      tr.appendChild(el("td", node + (i === 0 ? " (active)" : " (replica " + i + ")")));
      for (const e of ENGINES) {
        const s = seqnoOf(latest, node, e, vb);
        tr.appendChild(el("td", s === undefined ? "?" : s));
      }
      t.appendChild(tr);
    });
    tip.appendChild(t);
    const lag = lagOf(latest, chain, vb);
    if (lag !== undefined) tip.appendChild(el("div", lag ? "replicas behind by " + lag + " mutations" : "replicas caught up"));
  }
  tip.hidden = false;
  moveTip(ev);
}

function moveTip(ev) {
  const tip = $("tip");
  if (tip.hidden) return;
  const x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  const y = ev.clientY + 18 + tip.offsetHeight > window.innerHeight ? ev.clientY - tip.offsetHeight - 10 : ev.clientY + 18;
  tip.style.left = x + "px";
  tip.style.top = y + "px";
}

function renderReplication(st) {
  const m = st.map;
  const rows = [];
  let total = 0, chains = 0;
  if (m && m.vbuckets && st.copies) {
    const lags = [];
    m.vbuckets.forEach((v, vb) => {
      const chain = v.chain || [];
      const lag = lagOf(st, chain, vb);
      if (chain.length > 1) chains++;
      if (lag > 0) {
        total += lag;
        lags.push([vb, chain, lag]);
      }
    });
    lags.sort((a, b) => b[2] - a[2]);
    for (const [vb, chain, lag] of lags.slice(0, 20)) rows.push(row([num(vb), chain.join(" → "), num(lag)]));
    $("repl-line").textContent = chains === 0 ? "no chain has a replica (more nodes bring them)" : chains + " chains with replicas · " +
      (lags.length ? lags.length + " behind, " + total.toLocaleString("en") + " mutations in all (the 20 furthest behind below)" : "every replica caught up with its active");
  } else {
    $("repl-line").textContent = st.copies ? "no replicas in the map" : "no seqnos of the copies: the lag per chain is unknown";
  }
  fill("lag", rows, "no chain is behind");
  // The replica side's own sum, when the node reports one.
  const sum = st.replication && st.replication.lag;
  if (sum && typeof sum === "object") {
    const p = [];
    for (const [k, v] of Object.entries(sum)) {
      if (v === null || typeof v === "object") continue;
      p.push(k.replace(/_/g, " ") + " " + (/bytes/.test(k) ? bytes(v) : v));
    }
    if (p.length) $("repl-line").appendChild(el("span", " · this node's replicas behind: " + p.join(", "), sum.vbuckets ? "warn" : ""));
  }
  const engines = (st.replication && st.replication.engines) || [];
  fill("replicators", engines.map((e) => row([e.bucket, e.producer_node ? e.producer_node + " (" + e.producer + ")" : e.producer, e.state, num(e.vbuckets), { text: e.lagging, cls: "n" + (e.lagging ? " warn" : "") },
    num(e.applied), num(e.reconnects), num(e.rollbacks), lagText(e), e.last_error ? { text: e.last_error, cls: "bad", title: e.last_error_at || "" } : "-"])),
  "this node replicates from no one");
  const serving = (st.replication && st.replication.serving) || [];
  $("serving-section").hidden = serving.length === 0;
  fill("serving", serving.map((s) => row([s.consumer, s.bucket, s.remote, num(s.streams), num(s.caught_up), lagText(s)])), "no replica streams from this node");
}

// lagText shows whatever lag figures a replicator reports (the field
// names may grow: any "lag…" field is shown).
function lagText(e) {
  const out = [];
  for (const [k, v] of Object.entries(e)) {
    if (!/lag/.test(k) || k === "lagging" || v === null || typeof v === "object") continue;
    out.push(k.replace(/_/g, " ") + " " + (/seconds/.test(k) ? duration(v) : /millis|_ms$/.test(k) ? duration(v / 1000) : /bytes/.test(k) ? bytes(v) : v));
  }
  return out.length ? out.join(", ") : "-";
}

function renderEvents(st) {
  const c = st.cluster || {};
  const r = st.rebalance;
  if (r && (r.state || r.map_moving)) {
    $("rebalance-section").hidden = false;
    const parts = [];
    if (r.state) {
      const pct = r.total ? Math.floor(r.done * 100 / r.total) : 100;
      parts.push(r.state + (r.reason ? " (" + r.reason + ")" : ""), r.done + "/" + r.total + " vBuckets (" + pct + "%)",
        r.moving + " moving", r.abandoned + " abandoned", (r.bytes / 1e6).toFixed(1) + " MB at " + ((r.rate_bytes_per_s || 0) / 1e6).toFixed(1) + " MB/s");
      if (r.running && r.eta_ms >= 0) parts.push("ETA " + duration(r.eta_ms / 1000));
    } else {
      parts.push("run by the leader " + (r.leader || "?"));
    }
    if (r.map_moving) parts.push(r.map_moving + " vBuckets moving in the map");
    $("rebalance-line").textContent = parts.join(" · ");
  } else {
    $("rebalance-section").hidden = true;
  }
  fill("events", (st.events || []).map((e) => row([ago(e.time), { text: e.kind, cls: /refused/.test(e.kind) ? "warn" : /failover/.test(e.kind) ? "bad" : "" }, e.node, e.message])),
    "none since this node started" + (c.failovers ? " (the cluster has had " + c.failovers + " failovers)" : ""));
}

function renderChannels(st) {
  const kv = st.kv || {}, q = st.queue || {}, lg = st.log;
  const parts = ["kv " + (kv.records || 0).toLocaleString("en") + " records, " + bytes(kv.bytes) + ", memory " + bytes(kv.memory_bytes) + (kv.memory_limit_bytes ? " of " + bytes(kv.memory_limit_bytes) : "")];
  parts.push("queue " + (q.records || 0).toLocaleString("en") + " records, " + bytes(q.bytes) + " (" + (q.durability || "-") + (q.durability === "journal" ? ", fsync " + q.fsync_interval : "") + "), " +
    (q.pushed_records || 0).toLocaleString("en") + " pushed, " + (q.popped_records || 0).toLocaleString("en") + " popped");
  if (lg) parts.push("log " + (lg.records || 0).toLocaleString("en") + " records, " + bytes(lg.bytes) + ", " + bytes(lg.disk_bytes) + " on disk in " + (lg.segments || 0) + " segments (fsync " + lg.fsync + ")");
  $("engines-line").textContent = parts.join(" · ");
  const chans = (st.channels || []).slice().sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : a.kind < b.kind ? -1 : 1);
  fill("channels", chans.map((c) => row([c.name, c.kind, num(c.records), { text: bytes(c.bytes), cls: "n" }])), "no channels yet");
  fill("queues", (q.queues || []).map((x) => row([x.channel, x.subscriber !== undefined ? "\u201c" + x.subscriber + "\u201d" : "-", num(x.records),
    { text: x.memory_records + " · " + bytes(x.memory_bytes), cls: "n" }, { text: x.overflow_records + " · " + bytes(x.overflow_bytes), cls: "n" },
    { text: bytes(x.ring_size), cls: "n" }, { text: (x.fullness_percent || 0) + " %", cls: "n" + (x.fullness_percent > 90 ? " warn" : "") }, num(x.consumers)])), "no queues yet");
}

function renderDumps(st) {
  const d = st.dumps;
  if (!d) return;
  const parts = [d.interval_seconds ? "every " + duration(d.interval_seconds) : "only at shutdown and on demand", "to " + d.dir + " (" + d.codec + ")",
    d.dumps + " dumps since start", d.failures + " failed channel dumps"];
  if (d.running) parts.push("dumping now");
  if (d.last_end) parts.push("last ended " + ago(d.last_end).text + " after " + duration(d.last_duration_seconds));
  if (d.next) parts.push("next " + ago(d.next).text);
  $("dumps-line").textContent = parts.join(" · ");
  if (d.last_error) $("dumps-line").appendChild(el("span", " · last error (" + ago(d.last_error_at).text + "): " + d.last_error, "bad"));
  fill("dumps", (d.channels || []).map((c) => row([c.channel, num(c.records), { text: bytes(c.bytes), cls: "n" }, { text: bytes(c.file_bytes), cls: "n" },
    { text: duration(c.duration_seconds), cls: "n" }, c.error ? { text: c.error, cls: "bad" } : "-"])), "no dump yet");
}

function renderDiscovery(st) {
  const d = st.discovery;
  $("discovery-section").hidden = !d;
  if (!d) return;
  const parts = [d.backend, d.phase + " phase", d.backend_calls + " backend calls"];
  if (d.last_result) parts.push(d.last_result.ok ? "the last listed " + (d.last_result.nodes || []).length + " nodes" : "the last failed: " + d.last_result.error);
  parts.push((d.discovered || []).length + " discovered, " + (d.joined || []).length + " joined, " + (d.unavailable || []).length + " unavailable");
  if (!d.initial_done) parts.push("initial discovery not done");
  $("discovery-line").textContent = parts.join(" · ");
}

$("vbmap").addEventListener("mouseover", showTip);
$("vbmap").addEventListener("mousemove", moveTip);
$("vbmap").addEventListener("mouseleave", () => { $("tip").hidden = true; });
refresh();
