// The chat page: neffos.js (loaded as the global `neffos`) talking to this daphne instance.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const log = (text, kind) => {
    const item = document.createElement("li");
    item.textContent = text;
    if (kind) item.className = kind;
    $("log").appendChild(item);
  };
  let room = null;
  let chat = null;

  const handlers = {
    chat: {
      chat: (nsConn, msg) => {
        const data = JSON.parse(msg.Body);
        log(`${data.from}: ${data.text}`);
      },
      notice: (nsConn, msg) => log(msg.Body, "notice"),
      whisper: (nsConn, msg) => {
        const data = JSON.parse(msg.Body);
        log(`${data.from} whispers: ${data.text}`);
      },
      ping: (nsConn, msg) => neffos.reply(`pong from ${$("name").value}`),
    },
  };

  async function join(event) {
    event.preventDefault();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const name = encodeURIComponent($("name").value || "guest");
    try {
      if (!chat) {
        const conn = await neffos.dial(`${scheme}://${location.host}/ws/chat?name=${name}`, handlers);
        $("connection-id").textContent = conn.ID;
        chat = await conn.connect("chat");
      }
      if (room) await room.leave();
      room = await chat.joinRoom($("room").value || "lobby");
      log(`you joined ${room.name}`, "notice");
      $("text").disabled = false;
      $("send").disabled = false;
      $("text").focus();
    } catch (err) {
      log(`error: ${err.message || err}`, "error");
    }
  }

  function send(event) {
    event.preventDefault();
    const text = $("text").value;
    if (!room || !text) return;
    room.emit("chat", text);
    log(`me: ${text}`, "mine");
    $("text").value = "";
  }

  async function who() {
    if (!chat || !room) return;
    try {
      const reply = await chat.ask("who", room.name);
      log(`here: ${JSON.parse(reply.Body).join(", ")}`, "notice");
    } catch (err) {
      log(`error: ${err.message || err}`, "error");
    }
  }

  $("join-form").addEventListener("submit", join);
  $("send-form").addEventListener("submit", send);
  $("who").addEventListener("click", who);
})();
