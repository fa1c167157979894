"""The HTML of ``/status``: one self-contained page (inline CSS and script, nothing fetched
but its own ``/status/events`` stream), so it works offline and behind any firewall.

Everything the page shows comes from the snapshot (status.py), and channel names are the
clients': the script builds the DOM with ``textContent`` and ``dataset`` only, never HTML
from data. The Content-Security-Policy allows exactly this script and this style (by hash),
and connections to the page's own origin; an injected script would not run even if a bug
let one in.

Redis connections are drawn from their ``describe()``: the keys every kind has are columns,
and any other key (a cluster's ``nodes``, a Streams server's ``links``) is shown generically
in the last column, a list of objects as a small table, so a new connection kind shows its
details without a change here.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

STYLE: Final = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ddd;padding:.2em .6em;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
table.nested{font-size:.9em;margin:.1em 0}
header{display:flex;gap:1em;align-items:baseline}
.ok{color:#176117}.bad{color:#a31515;font-weight:bold}.warn{color:#8a5a00}
#link{display:inline-block;padding:.1em .6em;border-radius:1em;background:#eee}
dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;margin:0}
dt{color:#666}dd{margin:0}.note{color:#666}[hidden]{display:none}
"""

SCRIPT: Final = r"""
"use strict";
(function () {
  const KNOWN = ["worker", "address", "kind", "connected", "down_since", "expired",
                 "channels", "patterns", "connections_made"];
  let last = null, offset = 0;
  const $ = (id) => document.getElementById(id);
  const isPlain = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function cell(tag, v, cls) {
    const c = el(tag, null, cls);
    if (v instanceof Node) c.appendChild(v); else c.textContent = v == null ? "" : String(v);
    return c;
  }
  function row(values, numeric) {
    const tr = el("tr");
    values.forEach((v, i) => tr.appendChild(cell("td", v, numeric && numeric[i] ? "n" : "")));
    return tr;
  }
  function fill(table, head, rows) {
    const hr = el("tr");
    head.forEach((h) => hr.appendChild(el("th", h)));
    const thead = el("thead"), tbody = el("tbody");
    thead.appendChild(hr);
    rows.forEach((r) => tbody.appendChild(r));
    table.replaceChildren(thead, tbody);
  }
  const serverNow = () => (Date.now() + offset) / 1000;
  function span(s) {
    s = Math.max(0, Math.floor(s));
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24,
          m = Math.floor(s / 60) % 60, r = s % 60;
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + (d || h || m ? m + "m " : "") + r + "s";
  }
  const clock = (t) => new Date(t * 1000).toLocaleTimeString();
  const num = (n) => (typeof n === "number" ? n.toLocaleString() : n == null ? "—" : String(n));
  function ago(e) {
    const t = +e.dataset.t;
    e.textContent = clock(t) + " (" + span(serverNow() - t) + " ago)";
  }
  function when(t) {  // a time, and how long ago: kept current by tick()
    const e = el("span", null, "ago");
    e.dataset.t = t;
    ago(e);
    return e;
  }
  function scalar(key, v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "boolean") return v ? "yes" : "no";
    return typeof v === "number" ? num(v) : String(v);
  }
  function generic(key, v) {
    if (typeof v === "number" && /(_since|_at|started)$/.test(key)) return when(v);
    if (Array.isArray(v) && v.length && v.every(isPlain)) {
      const keys = [];
      v.forEach((o) => Object.keys(o).forEach((k) => keys.includes(k) || keys.push(k)));
      const t = el("table", null, "nested");
      fill(t, keys, v.map((o) => row(keys.map((k) => generic(k, o[k])))));
      return t;
    }
    if (isPlain(v)) {
      const t = el("table", null, "nested");
      fill(t, ["key", "value"], Object.keys(v).map((k) => row([k, generic(k, v[k])])));
      return t;
    }
    if (Array.isArray(v)) return document.createTextNode(v.map((x) => scalar(key, x)).join(", "));
    return document.createTextNode(scalar(key, v));
  }
  function state(c) {
    if (c.connected) return el("span", "connected", "ok");
    if (c.down_since == null) return el("span", c.expired ? "expired" : "connecting", "warn");
    const e = el("span", c.expired ? "expired, down since " : "down since ", "bad");
    e.appendChild(when(c.down_since));
    return e;
  }
  function extras(c) {
    const box = el("div");
    Object.keys(c).filter((k) => !KNOWN.includes(k)).forEach((k) => {
      const d = el("div");
      d.appendChild(el("b", k + ": "));
      d.appendChild(generic(k, c[k]));
      box.appendChild(d);
    });
    return box;
  }
  function render(s) {
    $("version").textContent = s.version;
    $("pid").textContent = s.pid;
    $("clients").textContent = s.clients;
    $("channel-count").textContent = num(s.channels.total) + (s.channels.exact ? "" : " or more");
    $("listeners").textContent = num(s.channels.listeners);
    $("updated").textContent = clock(s.now);
    const workers = s.workers || [];
    $("workers-section").hidden = !workers.length;
    $("processes").textContent = workers.length || 1;
    fill($("workers"), ["worker", "pid", "state", "clients", "restarts"], workers.map((w) => {
      const st = w.answering ? el("span", "answering", "ok")
        : el("span", w.pid == null ? "not running" : "not answering: " + w.error, "bad");
      const tr = row([w.index, w.pid == null ? "—" : w.pid, st, num(w.clients), w.restarts],
                     [true, true, false, true, true]);
      tr.dataset.worker = w.index;
      tr.dataset.answering = w.answering;
      return tr;
    }));
    const showWorker = s.redis.some((c) => "worker" in c);
    const head = (showWorker ? ["worker"] : []).concat(
      ["address", "kind", "state", "channels", "patterns", "connections made", "details"]);
    fill($("redis"), head, s.redis.map((c) => {
      const values = (showWorker ? [c.worker] : []).concat([c.address, c.kind, state(c),
        num(c.channels), num(c.patterns), num(c.connections_made), extras(c)]);
      const tr = row(values, values.map((v, i) => i >= values.length - 4 && i < values.length - 1));
      tr.dataset.address = c.address;
      tr.dataset.connected = c.connected;
      return tr;
    }));
    const ch = s.channels;
    $("channel-note").textContent = ch.shown < ch.total || !ch.exact
      ? "The " + ch.shown + " with the most listeners, of " + num(ch.total)
        + (ch.exact ? "" : " or more") + " (≥: some workers hold more than they list)."
      : ch.total ? "" : "No channel has a listener.";
    fill($("channels"), ["listeners", "kind", "name", "server"], ch.top.map((c) => {
      const tr = row([(c.partial ? "≥ " : "") + num(c.listeners), c.kind, c.name, c.server],
                     [true, false, false, false]);
      tr.dataset.channel = c.name;
      tr.dataset.kind = c.kind;
      tr.dataset.server = c.server;
      tr.dataset.listeners = c.listeners;
      return tr;
    }));
    fill($("counters"), ["counter", "value"], Object.keys(s.counters).map(
      (k) => row([k, num(s.counters[k])], [false, true])));
    tick();
  }
  function tick() {
    if (last) $("uptime").textContent = span(serverNow() - last.started);
    document.querySelectorAll(".ago").forEach(ago);
  }
  function link(text, cls) { const l = $("link"); l.textContent = text; l.className = cls; }
  const source = new EventSource(location.pathname.replace(/\/+$/, "") + "/events");
  source.onopen = () => link("live", "ok");
  source.onerror = () => link(source.readyState === EventSource.CLOSED
    ? "closed: reload the page" : "reconnecting…", "bad");
  source.onmessage = (e) => {
    last = JSON.parse(e.data);
    offset = last.now * 1000 - Date.now();
    link("live", "ok");
    render(last);
  };
  setInterval(tick, 1000);
})();
"""

BODY: Final = """
<header><h1>sse-offload status</h1><span id="link">connecting…</span></header>
<h2>Gateway</h2>
<dl>
<dt>version</dt><dd id="version">—</dd><dt>pid</dt><dd id="pid">—</dd>
<dt>processes</dt><dd id="processes">—</dd><dt>up for</dt><dd id="uptime">—</dd>
<dt>clients (open streams)</dt><dd id="clients">—</dd>
<dt>channels</dt><dd id="channel-count">—</dd>
<dt>listeners (per channel, summed)</dt><dd id="listeners">—</dd>
<dt>last update</dt><dd id="updated">—</dd>
</dl>
<section id="workers-section" hidden><h2>Workers</h2><table id="workers"></table></section>
<h2>Redis connections</h2><table id="redis"></table>
<h2>Channels</h2><p id="channel-note" class="note"></p><table id="channels"></table>
<h2>Counters</h2><table id="counters"></table>
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


#: The page, built once.
PAGE: Final = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    f"<title>sse-offload status</title><style>{STYLE}</style></head>"
    f"<body>{BODY}<script>{SCRIPT}</script></body></html>\n"
).encode()

#: Its headers: no caching, no sniffing, and a policy that allows this script and style
#: alone, and connections to its own origin (its event stream).
PAGE_HEADERS: Final = (
    (b"Content-Type", b"text/html; charset=utf-8"),
    (b"Cache-Control", b"no-store"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (
        b"Content-Security-Policy",
        (
            f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; "
            f"style-src {_csp_hash(STYLE)}; connect-src 'self'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'"
        ).encode(),
    ),
)
