// The secsgate web console: one page, routed by the URL's #fragment, fed by the JSON API and
// its server-sent events. No build step: this file is served as written.
"use strict";

const main = document.getElementById("main");
const liveBadge = document.getElementById("live");
let overview = null;         // the last overview event
let page = null;             // { name, update(overview), close() }

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => (
  { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const time = (ms) => (ms ? new Date(ms).toLocaleString() : "");
const clock = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "");
const ago = (ms) => {
  if (!ms || !overview) return "";
  const s = Math.max(0, Math.round((overview.now - ms) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d`;
};
const num = (n) => (n ?? 0).toLocaleString();
const statusCell = (s) => `<span class="status ${esc(s)}">${esc(s)}</span>`;

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
  if (!r.ok) throw new Error(data.error || `${r.status}`);
  return data;
}

// ---- live overview (one event per second) ----
function connectLive() {
  const es = new EventSource("/api/live");
  es.addEventListener("overview", (e) => {
    overview = JSON.parse(e.data);
    liveBadge.textContent = "live";
    liveBadge.classList.add("on");
    document.title = overview.title;
    for (const p of ["messages", "tags", "handlers"]) {
      document.querySelector(`nav a[data-page="${p}"]`).hidden = overview.kind !== "gateway";
    }
    if (page && page.update) page.update(overview);
  });
  es.onerror = () => { liveBadge.textContent = "reconnecting…"; liveBadge.classList.remove("on"); };
}

// ---- pages ----
const pages = {
  overview() {
    main.innerHTML = `<h1>Connections</h1><p id="mqtt" class="muted" hidden></p><div id="conns" class="muted">waiting for the first update…</div>`;
    const render = (o) => {
      const mqtt = document.getElementById("mqtt");
      mqtt.hidden = !o.mqtt;
      if (o.mqtt) {
        const m = o.mqtt;
        mqtt.innerHTML = `MQTT: ${m.connected ? "connected" : `<span class="error">broker unreachable</span>`}
          · ${num(m.published)} published · ${num(m.queued)} waiting on disk (${num(m.queued_bytes)} bytes)
          ${m.dropped ? `· <span class="error">${num(m.dropped)} dropped (queue full)</span>` : ""} · ${num(m.requests)} requests`;
      }
      const rows = o.connections.map((c) => {
        const link = c.kind === "equipment" ? `#/equipment/${encodeURIComponent(c.name)}`
          : `#/simulator/${encodeURIComponent(c.name)}`;
        const last = c.last ? `${esc(c.last.sf)} ${c.last.direction === "sent" ? "→" : "←"} ${ago(c.last.time)} ago` : "";
        return `<tr data-name="${esc(c.name)}" data-kind="${esc(c.kind)}">
          <td><a href="${link}">${esc(c.name)}</a></td><td>${esc(c.kind)}</td>
          <td>${esc(c.protocol)}</td><td>${esc(c.transport)}${c.address ? ` <span class="muted">(${esc(c.address)})</span>` : ""}</td>
          <td class="status-cell">${statusCell(c.status)}</td><td>${ago(c.since)}</td>
          <td class="num">${num(c.received)}</td><td class="num">${num(c.sent)}</td>
          <td class="num">${c.rate_received} / ${c.rate_sent}</td>
          <td class="num ${c.errors ? "error" : ""}" title="${esc(c.last_error ? c.last_error.error : "")}">${num(c.errors)}</td>
          <td>${last}</td></tr>`;
      }).join("");
      document.getElementById("conns").outerHTML = `<table id="conns"><thead><tr>
        <th>Name</th><th>Kind</th><th>Protocol</th><th>Transport</th><th>Status</th><th>Since</th>
        <th class="num">Received</th><th class="num">Sent</th><th class="num">Msg/s in / out</th>
        <th class="num">Errors</th><th>Last message</th></tr></thead><tbody>${rows ||
        `<tr><td colspan="11" class="muted">no connections</td></tr>`}</tbody></table>`;
    };
    if (overview) render(overview);
    return { update: render };
  },

  connection(kind, name) {
    const base = kind === "equipment" ? `/api/connections/${encodeURIComponent(name)}`
      : `/api/simulators/${encodeURIComponent(name)}`;
    main.innerHTML = `<h1>${esc(name)} <span class="muted">${esc(kind)}</span></h1>
      <div class="row">
        <div class="card"><dl class="kv" id="info"></dl>
          ${kind === "equipment" ? `<p><button id="toggle" class="secondary">…</button></p>` : ""}</div>
        ${kind === "equipment" ? `<div class="card"><h2 style="margin-top:0">Send a message</h2>
          <textarea id="send-text" spellcheck="false">S1F1 W</textarea>
          <form class="inline" id="send-form" onsubmit="return false">
            <label>Format<select id="send-format"><option value="sml">SML</option><option value="json">JSON</option></select></label>
            <label>Timeout (s)<input id="send-timeout" type="number" min="0.1" step="0.1" placeholder="T3"></label>
            <button id="send-button" type="submit">Send</button></form>
          <div id="send-result"></div></div>` : ""}
      </div>
      <h2>Live messages</h2>
      <form class="inline" id="filter" onsubmit="return false">
        <label>S/F<input id="f-sf" placeholder="S6F11 or S6" size="10"></label>
        <label>Direction<select id="f-dir"><option value="">both</option><option>received</option><option>sent</option></select></label>
        <label>Show<select id="f-json"><option value="">SML</option><option value="1">SML and JSON</option></select></label>
        <button id="f-apply" type="submit" class="secondary">Apply</button>
        <button id="f-clear" type="button" class="secondary">Clear</button>
        <span id="skipped" class="skipped"></span>
      </form>
      <div id="stream"><table><thead><tr><th>Time</th><th>Dir</th><th>S/F</th><th>TxID</th><th>System bytes</th><th>Message</th></tr></thead><tbody id="stream-rows"></tbody></table></div>
      ${kind === "equipment" ? `<details id="sdl"><summary>SDL in use</summary><pre id="sdl-text">loading…</pre></details>` : ""}`;
    const info = document.getElementById("info");
    const rowsEl = document.getElementById("stream-rows");
    const MAX_ROWS = 500;
    const primaries = new Map(); // system bytes -> row of the primary
    let es = null;
    let skipped = 0;
    const mapping = (h) => `${esc(h.stream_function)}${h.message ? ` (${esc(h.message)})` : ""} → ${esc(h.handler)}`;
    let details = {}; // what only /api/connections/NAME tells (kept across overview updates)
    const showInfo = (c) => {
      if (!c) return;
      if (c.custom_responses) details = c;
      c = { ...details, ...c };
      info.innerHTML = `<dt>Status</dt><dd class="status-cell">${statusCell(c.status)} <span class="muted">since ${time(c.since)}</span></dd>
        <dt>Transport</dt><dd>${esc(c.transport)}</dd>
        ${c.address ? `<dt>Listening</dt><dd>${esc(c.address)}</dd>` : ""}
        ${c.device_id !== undefined ? `<dt>Device ID</dt><dd>${c.device_id}</dd>` : ""}
        ${c.description ? `<dt>Description</dt><dd>${esc(c.description)}</dd>` : ""}
        <dt>Messages</dt><dd>${num(c.received)} received, ${num(c.sent)} sent (${c.rate_received} / ${c.rate_sent} per s)</dd>
        <dt>Bytes</dt><dd>${num(c.bytes_received)} received, ${num(c.bytes_sent)} sent</dd>
        <dt>Errors</dt><dd>${num(c.errors)} (${num(c.t3_timeouts)} T3 timeouts), ${num(c.reconnects)} reconnects</dd>
        ${c.custom_responses && c.custom_responses.length ? `<dt>Custom responses</dt><dd>${c.custom_responses.map(mapping).join("<br>")}</dd>` : ""}
        ${c.handlers && c.handlers.length ? `<dt>Handlers</dt><dd>${c.handlers.map(mapping).join("<br>")}</dd>` : ""}
        ${c.last_error ? `<dt>Last error</dt><dd class="error">${esc(c.last_error.error)} <span class="muted">${time(c.last_error.time)}</span></dd>` : ""}`;
      const t = document.getElementById("toggle");
      if (t) { t.textContent = c.enabled ? "Disable" : "Enable"; t.dataset.enabled = c.enabled ? "1" : ""; }
    };
    const addRow = (m) => {
      const tr = document.createElement("tr");
      tr.className = m.direction;
      tr.dataset.sf = m.sf;
      tr.dataset.systemBytes = m.system_bytes;
      let pair = "";
      if (m.reply) {
        const p = primaries.get(`${m.direction === "sent" ? "received" : "sent"}/${m.system_bytes}`);
        if (p) {
          pair = ` <a href="#" class="pair" title="its request">↩ ${esc(p.dataset.sf)} +${m.time - Number(p.dataset.time)} ms</a>`;
          tr._pair = p; p._pair = tr;
        }
      } else if (m.w) {
        primaries.set(`${m.direction}/${m.system_bytes}`, tr);
      }
      tr.dataset.time = m.time;
      tr.innerHTML = `<td>${clock(m.time)}</td><td class="dir">${m.direction === "sent" ? "→ sent" : "← received"}</td>
        <td>${esc(m.sf)}${m.w ? " W" : ""}${pair}</td><td>${m.txid || ""}</td><td>${m.system_bytes}</td>
        <td><pre class="sml">${esc(m.sml)}</pre>${m.json ? `<pre>${esc(JSON.stringify(m.json, null, 1))}</pre>` : ""}</td>`;
      tr.addEventListener("click", (ev) => {
        if (!tr._pair) return;
        ev.preventDefault();
        rowsEl.querySelectorAll("tr.linked").forEach((r) => r.classList.remove("linked"));
        tr.classList.add("linked"); tr._pair.classList.add("linked");
        tr._pair.scrollIntoView({ block: "nearest" });
      });
      rowsEl.prepend(tr);
      while (rowsEl.children.length > MAX_ROWS) {
        const old = rowsEl.lastElementChild;
        primaries.delete(`${old.className}/${old.dataset.systemBytes}`);
        old.remove();
      }
    };
    const open = () => {
      if (es) es.close();
      const q = new URLSearchParams();
      const sf = document.getElementById("f-sf").value.trim();
      const dir = document.getElementById("f-dir").value;
      if (sf) q.set("sf", sf);
      if (dir) q.set("direction", dir);
      if (document.getElementById("f-json").value) q.set("json", "true");
      es = new EventSource(`${base}/stream?${q}`);
      es.addEventListener("message", (e) => addRow(JSON.parse(e.data)));
      es.addEventListener("skipped", (e) => {
        const d = JSON.parse(e.data);
        skipped += d.skipped + d.lost;
        document.getElementById("skipped").textContent =
          `${num(skipped)} messages not shown (busy connection or slow page); the message log has them all`;
      });
    };
    document.getElementById("f-apply").onclick = open;
    document.getElementById("f-clear").onclick = () => { rowsEl.innerHTML = ""; primaries.clear(); };
    open();
    const fromOverview = (o) => showInfo(o.connections.find((c) => c.kind === kind && c.name === name));
    if (kind === "equipment") {
      api(base).then(showInfo).catch((e) => { info.innerHTML = `<dd class="error">${esc(e.message)}</dd>`; });
      document.getElementById("toggle").onclick = async (ev) => {
        const enable = !ev.target.dataset.enabled;
        try { await api(`${base}/enabled`, { enabled: enable }); showInfo(await api(base)); }
        catch (e) { alert(e.message); }
      };
      document.getElementById("send-button").onclick = async () => {
        const out = document.getElementById("send-result");
        out.innerHTML = `<span class="muted">sending…</span>`;
        const body = { text: document.getElementById("send-text").value,
          format: document.getElementById("send-format").value };
        const t = parseFloat(document.getElementById("send-timeout").value);
        if (t > 0) body.timeout = t;
        try {
          const r = await api(`${base}/send`, body);
          out.innerHTML = `<p>Sent ${esc(r.sent.sf)} as TxID ${r.txid}.</p>` + (r.reply
            ? `<p>Reply <b id="reply-sf">${esc(r.reply.sf)}</b>:</p><pre id="reply-sml">${esc(r.reply.sml)}</pre>`
            : (r.waited ? `<p class="error">No reply within the timeout.</p>` : `<p class="muted">No reply expected.</p>`));
        } catch (e) { out.innerHTML = `<p class="error" id="send-error">${esc(e.message)}</p>`; }
      };
      document.getElementById("sdl").addEventListener("toggle", async (ev) => {
        if (!ev.target.open) return;
        try {
          const s = await api(`${base}/sdl`);
          document.getElementById("sdl-text").textContent = s.file
            ? `${s.file} (${s.messages} messages)\n\n${s.text}` : "No SDL: messages are not checked (sdl = \"none\").";
        } catch (e) { document.getElementById("sdl-text").textContent = e.message; }
      });
    } else if (overview) fromOverview(overview);
    return {
      update: (o) => (kind === "equipment" ? showInfo(o.connections.find((c) => c.kind === kind && c.name === name)) : fromOverview(o)),
      close: () => es && es.close(),
    };
  },

  messages() {
    main.innerHTML = `<h1>Message log</h1>
      <form class="inline" id="search" onsubmit="return false">
        <label>Equipment<input id="q-equipment" size="12"></label>
        <label>S/F<input id="q-sf" size="8" placeholder="S6F11"></label>
        <label>CommonID<input id="q-common" size="10"></label>
        <label>Definition<input id="q-message" size="12" placeholder="LotStarted"></label>
        <label>Direction<select id="q-dir"><option value="">both</option><option>received</option><option>sent</option></select></label>
        <label>Since<input id="q-since" size="22" placeholder="10m, 2h or 2026-12-03T09:00:00Z"></label>
        <label>Until<input id="q-until" size="22"></label>
        <label>Limit<input id="q-limit" type="number" value="100" min="1" max="1000" size="5"></label>
        <button id="q-go" type="submit">Search</button></form>
      <div id="results"></div>`;
    const go = async () => {
      const q = new URLSearchParams();
      const add = (k, id) => { const v = document.getElementById(id).value.trim(); if (v) q.set(k, v); };
      add("equipment", "q-equipment"); add("sf", "q-sf"); add("common_id", "q-common"); add("message", "q-message");
      add("direction", "q-dir"); add("since", "q-since"); add("until", "q-until"); add("limit", "q-limit");
      const out = document.getElementById("results");
      try {
        const r = await api(`/api/messages?${q}`);
        out.innerHTML = `<p class="muted">${r.messages.length} messages, newest first</p><table><thead><tr><th>Time (UTC)</th><th>Equipment</th><th>Dir</th><th>S/F</th><th>Definition</th><th>CommonID</th><th>TxID</th><th>Message</th></tr></thead><tbody>${
          r.messages.map((m) => `<tr class="${esc(m.direction.toLowerCase())}"><td>${esc(m.timestamp)}</td><td>${esc(m.equipment)}</td><td class="dir">${esc(m.direction)}</td><td>${esc(m.sf)}</td><td>${esc(m.message_name)}</td><td>${esc(m.common_id)}</td><td>${m.txid}</td><td><pre class="sml">${esc(m.sml)}</pre></td></tr>`).join("")}</tbody></table>`;
      } catch (e) { out.innerHTML = `<p class="error">${esc(e.message)}</p>`; }
    };
    document.getElementById("q-go").onclick = go;
    go();
    return {};
  },

  tags() {
    main.innerHTML = `<h1>Tags</h1><div id="tags" class="muted">loading…</div>`;
    let version = null;
    const load = async () => {
      try {
        const r = await api("/api/tags");
        version = r.version;
        document.getElementById("tags").outerHTML = `<table id="tags"><thead><tr><th>Path</th><th>Value</th><th>Quality</th><th>Updated</th></tr></thead><tbody>${
          r.tags.map((t) => `<tr data-path="${esc(t.path)}"><td>${esc(t.path)}</td><td class="value"><code>${esc(JSON.stringify(t.value))}</code></td><td>${esc(t.quality)}</td><td>${clock(t.timestamp)}</td></tr>`).join("")}</tbody></table>`;
      } catch (e) { document.getElementById("tags").outerHTML = `<p id="tags" class="error">${esc(e.message)}</p>`; }
    };
    load();
    return { update: (o) => { if (o.tags_version !== version) load(); } };
  },

  handlers() {
    main.innerHTML = `<h1>Handlers</h1><div id="handlers" class="muted">loading…</div>`;
    const load = async () => {
      try {
        const r = await api("/api/handlers");
        document.getElementById("handlers").outerHTML = `<div id="handlers">${r.handlers.length ? "" : `<p class="muted">No handlers in handlers/.</p>`}${
          r.handlers.map((h) => `<div class="card handler" data-name="${esc(h.name)}">
            <h2 style="margin-top:0">${esc(h.name)} <span class="muted">version ${h.version}, loaded ${time(h.loaded)}</span></h2>
            <p class="muted">${esc(h.file)}</p>
            <p>${num(h.calls)} calls, <span class="${h.errors ? "error" : ""}">${num(h.errors)} errors</span> (${num(h.timeouts)} timed out, ${num(h.abandoned)} abandoned); mean ${h.mean_ms.toFixed(2)} ms, max ${h.max_ms.toFixed(2)} ms</p>
            ${h.compile_error ? `<p class="error">Does not compile (the previous version keeps running), ${time(h.compile_error.time)}:</p><pre class="compile-error">${esc(h.compile_error.error)}</pre>` : ""}
            ${h.last_error ? `<p class="error">Last error, ${time(h.last_error.time)}:</p><pre class="traceback">${esc(h.last_error.traceback)}</pre>` : ""}
          </div>`).join("")}${r.abandoned_threads ? `<p class="error">${r.abandoned_threads} abandoned handler threads still running</p>` : ""}</div>`;
      } catch (e) { document.getElementById("handlers").outerHTML = `<p id="handlers" class="error">${esc(e.message)}</p>`; }
    };
    load();
    return { update: load };
  },

  simulators() {
    main.innerHTML = `<h1>Simulators</h1><div id="sims" class="muted">loading…</div>`;
    const load = async () => {
      try {
        const r = await api("/api/simulators");
        document.getElementById("sims").outerHTML = `<div id="sims">${r.simulators.length ? "" : `<p class="muted">No simulators ([[simulator]] in project.toml).</p>`}${
          r.simulators.map((s) => `<div class="card sim" data-name="${esc(s.name)}">
            <h2 style="margin-top:0"><a href="#/simulator/${encodeURIComponent(s.name)}">${esc(s.name)}</a> ${statusCell(s.status)}</h2>
            <p>${esc(s.transport)}${s.address ? ` (${esc(s.address)})` : ""}; communication ${esc(s.communication)}, control ${esc(s.control)};
              spool ${num(s.spool_count)}, ${s.runs_active} runs active, ${s.in_flight} awaiting replies; ${num(s.sent)} sent, ${num(s.received)} received</p>
            <p>Event runs: ${s.runs.length ? s.runs.map((run) => `<button class="run" data-sim="${esc(s.name)}" data-run="${esc(run)}">Start ${esc(run)}</button>`).join(" ") : `<span class="muted">none</span>`}</p>
            <details><summary>Variables (${s.variables.length})</summary><table><thead><tr><th>ID</th><th>Name</th><th>Class</th><th>Value</th><th>Units</th></tr></thead><tbody>${
              s.variables.map((v) => `<tr><td>${v.id}</td><td>${esc(v.name)}</td><td>${v.class}</td><td><code>${esc(v.value)}</code></td><td>${esc(v.units)}</td></tr>`).join("")}</tbody></table></details>
          </div>`).join("")}</div>`;
        document.querySelectorAll("button.run").forEach((b) => {
          b.onclick = async () => {
            try { await api(`/api/simulators/${encodeURIComponent(b.dataset.sim)}/runs/${encodeURIComponent(b.dataset.run)}`, {}); b.textContent = `Started ${b.dataset.run}`; }
            catch (e) { alert(e.message); }
          };
        });
      } catch (e) { document.getElementById("sims").outerHTML = `<p id="sims" class="error">${esc(e.message)}</p>`; }
    };
    load();
    // Keeps open <details> open: reloads only on demand, and every 5 s while none is open.
    let n = 0;
    return { update: () => { if (++n % 5 === 0 && !document.querySelector("#sims details[open]")) load(); } };
  },
};

function route() {
  if (page && page.close) page.close();
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  let name = parts[0] || "overview";
  if (name === "equipment" || name === "simulator") {
    page = pages.connection(name, parts.slice(1).join("/"));
    name = "overview";
  } else {
    page = (pages[name] || pages.overview)();
  }
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === name));
}

window.addEventListener("hashchange", route);
connectLive();
route();
