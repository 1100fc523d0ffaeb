"""The admin API's HTML status page (``GET /``): one self-contained document.

The page carries the status snapshot it was rendered with (a JSON island, so
the first paint needs no request) and a small script that fetches
``/v1/status?peers=true`` every two seconds and redraws in place: node and
NAT, transport, beacons with their round trips and last answer, counters and
drop reasons, and the peer table with per-peer RTT sparklines (the page
keeps the last samples it saw) and, on a click, the peer's candidates and
path history. No external asset is loaded; every value is inserted as text,
never as markup.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from typing import Final

from .status import SidecarStatus

__all__ = ["render_page"]

_STYLE: Final = """
body{font:14px system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.05em;margin:1.2em 0 .3em}
.cards{display:flex;flex-wrap:wrap;gap:1em}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em .9em;min-width:18em}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0}.kv td:first-child{font-weight:600;white-space:nowrap}
.direct{color:#067d17}.relay{color:#a45200}.offline{color:#b00020;font-weight:600}
tr.peer{cursor:pointer}tr.peer:hover{background:#f4f8ff}
#updated{color:#666;font-size:.9em}#updated.stale{color:#b00020}
svg.spark{vertical-align:middle}.muted{color:#777}
"""

_SCRIPT: Final = r"""
"use strict";
const history = {};  // node ID -> recent RTT samples (ms), newest last
const open = new Set();  // node IDs whose details are shown
let lastOk = Date.now();

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function age(s) {
  if (s === null || s === undefined) return "-";
  if (s < 1) return Math.round(s * 1000) + "ms";
  if (s < 60) return s.toFixed(1) + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m" + String(Math.floor(s % 60)).padStart(2, "0") + "s";
  return Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
}
function ms(v) { return v === null || v === undefined ? "-" : v.toFixed(1) + "ms"; }
function kv(rows) {
  const t = el("table", null, "kv");
  for (const [k, v] of rows) {
    const tr = el("tr");
    tr.append(el("td", k), el("td", v));
    t.append(tr);
  }
  return t;
}
function card(title, body) {
  const c = el("div", null, "card");
  c.append(el("h2", title), body);
  return c;
}
function spark(values) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", "90"); svg.setAttribute("height", "18");
  svg.setAttribute("class", "spark");
  const pts = values.filter(v => v !== null);
  if (pts.length > 1) {
    const max = Math.max(...pts), min = Math.min(...pts), span = Math.max(max - min, 0.001);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("fill", "none"); line.setAttribute("stroke", "#3566c8");
    line.setAttribute("points", pts.map((v, i) =>
      (i * 90 / (pts.length - 1)).toFixed(1) + "," + (16 - (v - min) * 14 / span).toFixed(1)
    ).join(" "));
    svg.append(line);
  }
  return svg;
}
function nonzero(obj) {
  const parts = Object.entries(obj).filter(([, n]) => n > 0).map(([k, n]) => k + " " + n);
  return parts.length ? parts.join(", ") : "none";
}
function render(s) {
  document.title = "natroute sidecar " + (s.node_id ?? "");
  document.getElementById("title").textContent =
    "natroute sidecar " + (s.node_id ?? "-") + (s.ready ? " (ready)" : " (starting)");
  const b = s.beacon, c = s.counters;
  const obs = Object.entries(s.nat.observations).map(([k, v]) => k + " saw " + v).join("; ");
  const cards = document.getElementById("cards");
  cards.replaceChildren(
    card("Node", kv([
      ["public endpoint", s.public_endpoint ?? "-"],
      ["local address", s.local_addr ?? "-"],
      ["data plane", s.app_addr ?? "-"],
      ["registered", s.registered ? "yes" : "no"],
      ["relay_only", s.relay_only ? "yes" : "no"],
      ["uptime", age(s.uptime)],
    ])),
    card("NAT and transport", kv([
      ["NAT", s.nat.type],
      ["observations", obs || "-"],
      ["transport", s.transport + (s.stream.url ? " " + s.stream.url : "")],
      ["stream", s.transport === "stream" ? (s.stream.open ? "open" : "down") : "-"],
    ])),
    card("Beacons", kv([
      ["pick", (b.pick || "-") + " (" + (b.reason ?? "-") + ", list from " + b.source + ")"],
      ["beacons", b.beacons.map(a => a + (b.rtt_ms[a] !== undefined ? " " + ms(b.rtt_ms[a]) : ""))
        .join(", ") || "-"],
      ["last answer", age(b.last_reply_age)],
      ["last refresh", age(b.last_refresh_age) +
        (b.last_refresh_errors.length ? " — " + b.last_refresh_errors.join("; ") : "")],
      ["cache age", age(b.cache_age)],
    ])),
    card("Traffic", kv([
      ["frames in", c.direct_in + " direct / " + c.relayed_in + " relayed"],
      ["application", c.app_received + " sent / " + c.app_delivered + " delivered"],
      ["drops", nonzero(c.drops)],
      ["path changes", nonzero(c.path_changes)],
    ])),
  );
  const tbody = document.getElementById("peers");
  tbody.replaceChildren();
  document.getElementById("peercount").textContent =
    s.peers_total + " (" + s.peers_direct + " direct, " + s.peers_relay + " relay, " +
    s.peers_offline + " offline)";
  for (const p of s.peers) {
    const rtt = p.path === "direct" ? p.rtt_ms : p.relay_rtt_ms;
    const h = history[p.node_id] = (history[p.node_id] || []).concat([rtt]).slice(-60);
    const tr = el("tr", null, "peer");
    tr.dataset.node = p.node_id;
    const sparkCell = el("td");
    sparkCell.append(spark(h));
    tr.append(
      el("td", p.node_id), el("td", p.name || "-"), el("td", p.path, p.path),
      el("td", p.reason), el("td", p.state, p.state === "offline" ? "offline" : ""),
      el("td", p.addr ?? "-"), el("td", ms(rtt)), sparkCell,
      el("td", age(p.last_heard_age)), el("td", p.pkts_sent + "/" + p.pkts_recv),
    );
    tr.addEventListener("click", () => {
      open.has(p.node_id) ? open.delete(p.node_id) : open.add(p.node_id);
      render(s);
    });
    tbody.append(tr);
    if (open.has(p.node_id)) tbody.append(details(p));
  }
}
function details(p) {
  const tr = el("tr", null, "details");
  const td = el("td"); td.colSpan = 10;
  const cands = el("table");
  cands.append(rowOf(["candidate", "kind", "probes", "acks", "rtt", "last ack", ""], "th"));
  for (const c of p.candidates)
    cands.append(rowOf([c.addr, c.kind, c.probes_sent, c.acks, ms(c.rtt_ms),
      age(c.last_ack_age), c.chosen ? "chosen" : (c.failed ? "failed" : "")]));
  const events = el("table");
  events.append(rowOf(["ago", "path", "reason", "detail"], "th"));
  for (const e of p.events.slice().reverse())
    events.append(rowOf([age(e.age), e.path, e.reason, e.detail]));
  td.append(el("b", "candidates"), cands, el("b", "path history"), events);
  tr.append(td);
  return tr;
}
function rowOf(cells, tag) {
  const tr = el("tr");
  for (const c of cells) tr.append(el(tag || "td", c));
  return tr;
}
async function poll() {
  const stamp = document.getElementById("updated");
  try {
    const r = await fetch("/v1/status?peers=true", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    lastOk = Date.now();
    stamp.className = "";
  } catch (err) {
    stamp.className = "stale";
  }
  stamp.textContent = "updated " + age((Date.now() - lastOk) / 1000) + " ago";
}
render(JSON.parse(document.getElementById("initial").textContent));
setInterval(poll, 2000);
"""

_BODY: Final = """<h1 id="title"></h1><div id="updated"></div>
<div class="cards" id="cards"></div>
<h2>Peers <span id="peercount" class="muted"></span></h2>
<table><thead><tr><th>peer</th><th>name</th><th>path</th><th>reason</th><th>state</th>
<th>addr</th><th>rtt</th><th>rtt history</th><th>last heard</th><th>pkts out/in</th></tr>
</thead><tbody id="peers"></tbody></table>
<p class="muted">Click a peer for its candidates and path history.</p>"""


def render_page(status: SidecarStatus) -> str:
    """The whole page, with ``status`` as its first data."""
    data = json.dumps(asdict(status), separators=(",", ":"))
    # a JSON island: "<" is escaped so no value can close the script element
    island = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    title = html.escape(f"natroute sidecar {status.node_id or ''}".strip())
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width">'
        f"<title>{title}</title><style>{_STYLE}</style></head><body>{_BODY}"
        f'<script type="application/json" id="initial">{island}</script>'
        f"<script>{_SCRIPT}</script></body></html>"
    )
