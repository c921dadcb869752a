// The dashboard page: neffos.js (the global `neffos`) connected to the "dashboard" namespace;
// the server pushes a "stats" event each second (chat/dashboard.py).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const cell = (row, text, className) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
  };
  const rows = (tableId, items, fill) => {
    const body = $(tableId).querySelector("tbody");
    body.replaceChildren();
    for (const item of items) {
      const row = document.createElement("tr");
      fill(row, item);
      body.appendChild(row);
    }
  };
  const duration = (s) => (s >= 3600 ? `${Math.floor(s / 3600)}h ${Math.floor(s / 60) % 60}m`
    : s >= 60 ? `${Math.floor(s / 60)}m ${s % 60}s` : `${s}s`);

  function show(stats) {
    $("updated").textContent = new Date(stats.at * 1000).toLocaleTimeString();
    $("error").hidden = !stats.error;
    if (stats.error) { $("error").textContent = stats.error; return; }
    $("instance-count").textContent = String(stats.instances.length);
    rows("instances", stats.instances, (row, i) => {
      cell(row, i.pid);
      cell(row, i.where);
      cell(row, duration(i.uptime));
      cell(row, i.connected ? "connected" : "DOWN", i.connected ? "" : "down");
      cell(row, String(i.channels));
      cell(row, String(i.groups));
      cell(row, i.messages_per_second.toFixed(1));
      const drops = Object.entries(i.drops).map(([reason, n]) => `${reason} ${n}`).join(", ");
      cell(row, drops || "none");
    });
    $("room-count").textContent = String(stats.rooms.length);
    rows("rooms", stats.rooms, (row, r) => { cell(row, r.room); cell(row, String(r.members)); });
  }

  async function start() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const handlers = { dashboard: { stats: (nsConn, msg) => show(JSON.parse(msg.Body)) } };
    const conn = await neffos.dial(`${scheme}://${location.host}/ws/chat?name=dashboard`, handlers,
      { reconnect: 2000 });
    await conn.connect("dashboard");
  }

  start().catch((err) => { $("error").hidden = false; $("error").textContent = String(err); });
})();
