// The chat page: neffos.js (the global `neffos`) through the channels_neffos client helper
// (the global `ChannelsNeffos`, recovery.js): if this instance goes away, the page reconnects to
// another one and shows what was said in its room meanwhile.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const log = (text, kind) => {
    const item = document.createElement("li");
    item.textContent = text;
    if (kind) item.className = kind;
    $("log").appendChild(item);
  };
  let session = null;
  let room = null;

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

  // This instance first, then the others (the demo lists them; behind a load balancer one URL
  // is enough).
  function endpoints(name) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const own = `${scheme}://${location.host}`;
    const peers = JSON.parse($("peers").textContent).filter((url) => url !== own);
    return [own, ...peers].map((url) => `${url}/ws/chat?name=${name}`);
  }

  function showConnection() {
    $("connection-id").textContent = session.id ? `${session.id} (${new URL(session.url).host})` : "reconnecting…";
  }

  async function join(event) {
    event.preventDefault();
    const name = encodeURIComponent($("name").value || "guest");
    try {
      if (!session) {
        session = await ChannelsNeffos.connect(endpoints(name), handlers, {
          onState: (state, detail) => {
            if (!session) return;  // the first connection: shown below
            if (state === "reconnecting") log(`connection lost (${detail.code}); reconnecting…`, "error");
            if (state === "connected") log("reconnected", "notice");
            showConnection();
          },
          onRecovery: (info) => {
            if (!info.recovered) {
              log(`the history of ${info.room} could not be recovered (${info.reason}): messages may be missing`, "error");
            } else if (info.replayed) {
              log(`${info.replayed} message(s) you missed in ${info.room}`, "notice");
            }
          },
        });
        showConnection();
        await session.connect("chat");
      }
      if (room) await session.leave("chat", room);
      room = $("room").value || "lobby";
      await session.join("chat", room);
      log(`you joined ${room}`, "notice");
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
    if (session.emit("chat", "chat", text, room)) {
      log(`me: ${text}`, "mine");
      $("text").value = "";
    } else {
      log("not sent: reconnecting", "error");
    }
  }

  async function who() {
    if (!session || !room) return;
    try {
      const reply = await session.ask("chat", "who", room);
      log(`here: ${JSON.parse(reply.Body).join(", ")}`, "notice");
    } catch (err) {
      log(`error: ${err.message || err}`, "error");
    }
  }

  $("join-form").addEventListener("submit", join);
  $("send-form").addEventListener("submit", send);
  $("who").addEventListener("click", who);
})();
