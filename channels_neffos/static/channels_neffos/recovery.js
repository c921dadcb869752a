/*
 * channels_neffos client helper: neffos.js connections that reconnect — to any instance — and
 * get back every message of their history rooms that they missed.
 *
 * A plain script (<script src="{% static 'channels_neffos/recovery.js' %}">: it defines
 * `ChannelsNeffos`) and, through recovery.mjs, an ES module. It wraps neffos.js (0.1.34), which
 * must be loaded first (or passed as `options.neffos`); neffos.js itself is not changed.
 *
 *   const session = await ChannelsNeffos.connect("wss://example.com/ws/chat", {  // or a list
 *     chat: { chat(nsConn, msg) { show(msg.Room, msg.Body, msg.position); } },
 *   }, {
 *     onRecovery(info) { if (!info.recovered) reload(info.namespace, info.room); },
 *     onState(state) { banner(state); },             // "connected", "reconnecting", "closed"
 *   });
 *   await session.connect("chat");
 *   await session.join("chat", "lobby");
 *   session.emit("chat", "chat", "hello", "lobby");
 *
 * What it does (see docs/recovery.rst):
 * - After connecting to a namespace it emits `_NeffosResume` with the last position it has of
 *   each room it is about to (re)join; the server then sends this connection's history-room
 *   broadcasts with their position, and replays what each room missed on (re)join, followed by
 *   `_NeffosReplayed`. Handlers receive replayed and live messages alike, in offset order, the
 *   replay first; `msg.position` is `{epoch, offset, gap}` for messages of history rooms.
 * - Duplicates (an offset at or below the last one handled, same epoch) are dropped.
 * - `onRecovery({namespace, room, recovered, replayed, reason, epoch, offset})` runs after every
 *   (re)join of a history room, and with `recovered: false` when live messages show that some
 *   were lost (a new epoch, or a gap the server could not fill). `recovered: false` means
 *   nothing was replayed: reload that room's state.
 * - When the WebSocket closes (network, a killed or draining instance: close code 4012), it
 *   dials again (the next URL of a list, if the dial fails or the instance drains; behind a
 *   load balancer, one URL is enough) after a random delay ("full jitter": uniform in [0, min(maxDelay,
 *   minDelay * 2^attempt)]), reconnects the namespaces and rejoins the rooms. The connection id
 *   (`session.id`) changes; whatever identifies the user to the server (cookies, the URL's
 *   query string) is sent again, so presence and permissions carry over.
 * - Messages emitted while disconnected are not queued: `emit` returns false.
 */
(function (root) {
  "use strict";

  const RESUME = "_NeffosResume";
  const REPLAYED = "_NeffosReplayed";
  const CLOSE_DRAINING = 4012;
  const SEPARATOR = "\u0000";

  /* `{epoch, offset, gap}` from a frame's wait field `~<epoch>.<offset>[!]`, else null. */
  function parsePosition(wait) {
    if (typeof wait !== "string" || wait[0] !== "~") {
      return null;
    }
    const gap = wait[wait.length - 1] === "!";
    const token = wait.slice(1, gap ? -1 : wait.length);
    const dot = token.lastIndexOf(".");
    const offset = Number(token.slice(dot + 1));
    if (dot < 1 || !Number.isInteger(offset)) {
      return null;
    }
    return { epoch: token.slice(0, dot), offset: offset, gap: gap };
  }

  function eventsOf(handlers) {
    if (handlers instanceof Map) {
      return Array.from(handlers.entries());
    }
    return Object.keys(handlers || {}).map(function (key) {
      return [key, handlers[key]];
    });
  }

  class Session {
    constructor(url, handlers, options) {
      /** The endpoints, tried in turn: a failed dial or a draining instance moves to the next. */
      this.urls = Array.isArray(url) ? url.slice() : [url];
      if (this.urls.length === 0) {
        throw new Error("ChannelsNeffos.connect needs at least one URL");
      }
      this.current = 0;
      this.options = options || {};
      this.neffos = this.options.neffos || root.neffos;
      if (!this.neffos || typeof this.neffos.dial !== "function") {
        throw new Error("ChannelsNeffos needs neffos.js: load it first or pass options.neffos");
      }
      this.minDelay = this.options.minDelay === undefined ? 250 : this.options.minDelay;
      this.maxDelay = this.options.maxDelay === undefined ? 10000 : this.options.maxDelay;
      /** "ns\0room" -> {epoch, offset} last handled (epoch null: the room had no history yet) */
      this.positions = new Map();
      /** namespace -> Set of rooms: what the session connects to and rejoins */
      this.wanted = new Map();
      /** namespace -> the current connection's NSConn */
      this.nsConns = new Map();
      this.conn = null;
      this.previousId = null;
      this.attempt = 0;
      this.closed = false;
      this.state = "connecting";
      /** What the helper counted: duplicates dropped, reconnections made. */
      this.stats = { duplicates: 0, reconnects: 0 };
      this.handlers = this._wrap(handlers);
    }

    /** The connection id now (it changes with every reconnection). */
    get id() {
      return this.conn ? this.conn.ID : null;
    }

    /** The endpoint dialled last. */
    get url() {
      return this.urls[this.current];
    }

    _next() {
      this.current = (this.current + 1) % this.urls.length;
    }

    _wrap(handlers) {
      const wrapped = {};
      for (const [namespace, events] of eventsOf(handlers)) {
        const out = {};
        let anyEvent = null;
        for (const [name, handler] of eventsOf(events)) {
          if (name === "_OnAnyEvent") {
            anyEvent = handler;
          }
          out[name] = this._handler(namespace, handler);
        }
        if (!anyEvent) {  // positions of events without a handler still count
          out._OnAnyEvent = this._handler(namespace, null);
        }
        out[REPLAYED] = (nsConn, msg) => this._replayed(namespace, msg);
        wrapped[namespace] = out;
      }
      return wrapped;
    }

    _handler(namespace, handler) {
      return (nsConn, msg) => {
        const position = parsePosition(msg.wait);
        if (position !== null) {
          msg.wait = "";  // as neffos.js would have it: nothing to answer
          const key = namespace + SEPARATOR + msg.Room;
          const last = this.positions.get(key);
          if (last && last.epoch === position.epoch && position.offset <= last.offset) {
            this.stats.duplicates++;
            return undefined;
          }
          this.positions.set(key, { epoch: position.epoch, offset: position.offset });
          msg.position = position;
          if (last && last.epoch !== null && (last.epoch !== position.epoch || position.gap)) {
            this._recovery({
              namespace: namespace, room: msg.Room, recovered: false, replayed: 0,
              reason: position.gap ? "gap" : "epoch",
              epoch: position.epoch, offset: position.offset,
            });
          }
        }
        return handler ? handler(nsConn, msg) : undefined;
      };
    }

    _replayed(namespace, msg) {
      let info;
      try {
        info = JSON.parse(msg.Body);
      } catch (error) {
        return undefined;
      }
      const key = namespace + SEPARATOR + msg.Room;
      const last = this.positions.get(key);
      // The replay covered everything up to info.offset; keep a later position if one was
      // handled already (it cannot be: the server sends the replay first).
      if (!(last && last.epoch === info.epoch && last.offset > info.offset)) {
        this.positions.set(key, { epoch: info.epoch, offset: info.offset });
      }
      this._recovery({
        namespace: namespace, room: msg.Room, recovered: info.recovered,
        replayed: info.replayed, reason: info.reason || null,
        epoch: info.epoch, offset: info.offset,
      });
      return undefined;
    }

    _recovery(info) {
      if (this.options.onRecovery) {
        this.options.onRecovery(info);
      }
    }

    _setState(state, detail) {
      this.state = state;
      if (this.options.onState) {
        this.options.onState(state, detail);
      }
    }

    async _dial() {
      const dialOptions = Object.assign({}, this.options.dialOptions || {}, { reconnect: 0 });
      let conn;
      try {
        conn = await this.neffos.dial(this.url, this.handlers, dialOptions);
      } catch (error) {
        this._next();
        throw error;
      }
      if (this.closed) {
        conn.close();
        return;
      }
      const socket = conn.conn;
      this.conn = conn;
      socket.addEventListener("close", (event) => this._lost(conn, event));
      try {
        for (const [namespace, rooms] of this.wanted) {
          await this._enter(conn, namespace, rooms);
        }
      } catch (error) {
        conn.close();
        throw error;
      }
      this.attempt = 0;
      this._setState("connected");
    }

    async _enter(conn, namespace, rooms) {
      const nsConn = await conn.connect(namespace);
      const positions = {};
      for (const room of rooms) {
        positions[room] = this.positions.get(namespace + SEPARATOR + room) || null;
      }
      nsConn.emit(RESUME, JSON.stringify({ rooms: positions, was: this.previousId }));
      this.nsConns.set(namespace, nsConn);
      await Promise.all(Array.from(rooms, (room) => nsConn.joinRoom(room)));
    }

    _lost(conn, event) {
      if (conn !== this.conn) {
        return;
      }
      this.previousId = conn.ID || this.previousId;
      this.conn = null;
      this.nsConns.clear();
      if (this.closed) {
        return;
      }
      if (event.code === CLOSE_DRAINING) {
        this._next();  // that instance is going away
      }
      this._setState("reconnecting", { code: event.code, reason: event.reason });
      this._retry();
    }

    _retry() {
      const ceiling = Math.min(this.maxDelay, this.minDelay * Math.pow(2, this.attempt));
      this.attempt++;
      setTimeout(() => {
        if (this.closed) {
          return;
        }
        this.stats.reconnects++;
        this._dial().catch(() => {
          if (this.conn === null && !this.closed) {
            this._retry();
          }
        });
      }, Math.random() * ceiling);
    }

    /** Connect to `namespace` now and after every reconnection. */
    async connect(namespace) {
      if (!this.wanted.has(namespace)) {
        this.wanted.set(namespace, new Set());
      }
      if (this.conn && !this.nsConns.has(namespace)) {
        await this._enter(this.conn, namespace, this.wanted.get(namespace));
      }
      return this.nsConns.get(namespace);
    }

    /** Join `room` of `namespace` (connected first) now and after every reconnection. */
    async join(namespace, room) {
      await this.connect(namespace);
      const rooms = this.wanted.get(namespace);
      if (rooms.has(room)) {
        return;
      }
      rooms.add(room);
      const nsConn = this.nsConns.get(namespace);
      if (nsConn) {
        await nsConn.joinRoom(room);
      }
    }

    /** Leave `room`: not rejoined any more; its position is forgotten. */
    async leave(namespace, room) {
      const rooms = this.wanted.get(namespace);
      if (rooms) {
        rooms.delete(room);
      }
      this.positions.delete(namespace + SEPARATOR + room);
      const nsConn = this.nsConns.get(namespace);
      if (nsConn && nsConn.room(room)) {
        await nsConn.room(room).leave();
      }
    }

    /** Emit on the current connection; false (not sent, not queued) while disconnected. */
    emit(namespace, event, body, room) {
      const nsConn = this.nsConns.get(namespace);
      if (!nsConn) {
        return false;
      }
      if (room) {
        const joined = nsConn.room(room);
        return joined ? joined.emit(event, body) : false;
      }
      return nsConn.emit(event, body);
    }

    /** Ask on the current connection (rejects while disconnected). */
    ask(namespace, event, body) {
      const nsConn = this.nsConns.get(namespace);
      if (!nsConn) {
        return Promise.reject(new Error("disconnected: the session is reconnecting"));
      }
      return nsConn.ask(event, body);
    }

    /** The last position handled in a room ({epoch, offset}), or null. */
    position(namespace, room) {
      return this.positions.get(namespace + SEPARATOR + room) || null;
    }

    /** Close for good: no reconnection. */
    close() {
      this.closed = true;
      this._setState("closed");
      if (this.conn) {
        this.conn.close();
      }
    }
  }

  /** A Session whose first connection is made: each URL is tried once; rejects if none
      accepts (later losses are retried for ever, until close()). */
  async function connect(url, handlers, options) {
    const session = new Session(url, handlers, options);
    for (let tried = 1; ; tried++) {
      try {
        await session._dial();
        return session;
      } catch (error) {
        if (tried >= session.urls.length) {
          throw error;
        }
      }
    }
  }

  root.ChannelsNeffos = {
    connect: connect,
    Session: Session,
    parsePosition: parsePosition,
    RESUME: RESUME,
    REPLAYED: REPLAYED,
    CLOSE_DRAINING: CLOSE_DRAINING,
  };
})(typeof globalThis !== "undefined" ? globalThis : this);
