// Herald client for browsers and Node >= 20: pub/sub with reconnect, resume and token
// refresh, and queue consumers. One ES module, no dependencies. See docs/clients.md.
//
//   import { HeraldClient } from "/client/herald.js";
//   const client = new HeraldClient("wss://herald.example/ws", { getToken });
//   const sub = client.subscribe("game.1.score", {}, (msg) => render(msg.data));
//   sub.on("recovered", (e) => { if (!e.recovered) reloadState(); });

const RESENDABLE = new Set(["ack", "nack", "extend", "ping"]);
const FATAL_CODES = new Set([1008]);
const CLOSE_UNAUTHORIZED = 4401;

/** Base class of every error this module throws; `code` is Herald's error code. */
export class HeraldError extends Error {
  constructor(code, message, reply) {
    super(`${code}: ${message}`);
    this.name = "HeraldError";
    this.code = code;
    this.reply = reply;
  }
}

/** The `exp` claim of a JWT (unverified, only to plan a refresh), or null. */
export function jwtExp(token) {
  if (typeof token !== "string" || token.split(".").length !== 3) return null;
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return typeof claims?.exp === "number" ? claims.exp : null;
  } catch {
    return null;
  }
}

class Emitter {
  constructor() {
    this._handlers = new Map();
  }
  /** Call `callback(info)` on every `event` ("*": `callback(event, info)`). */
  on(event, callback) {
    if (!this._handlers.has(event)) this._handlers.set(event, []);
    this._handlers.get(event).push(callback);
    return this;
  }
  off(event, callback) {
    const list = this._handlers.get(event);
    if (list) this._handlers.set(event, list.filter((cb) => cb !== callback));
    return this;
  }
  emit(event, info) {
    for (const cb of this._handlers.get(event) ?? []) {
      try {
        cb(info);
      } catch (err) {
        console.error(`herald: ${event} handler failed`, err);
      }
    }
    for (const cb of this._handlers.get("*") ?? []) {
      try {
        cb(event, info);
      } catch (err) {
        console.error("herald: event handler failed", err);
      }
    }
  }
}

/**
 * Messages for one pattern, in order and without duplicates across reconnects.
 * Events: message, subscribed, recovered ({recovered: false} = messages were missed),
 * lagged, error, state. Also an async iterator of messages.
 */
export class Subscription extends Emitter {
  constructor(client, pattern, options, onMessage) {
    super();
    this.client = client;
    this.pattern = pattern;
    this.options = {};
    if (options.filter != null) this.options.filter = options.filter;
    if (options.batchMs) this.options.batch_ms = options.batchMs;
    if (options.mode != null) this.options.mode = options.mode;
    if (options.key != null) this.options.key = options.key;
    this.key = null; // the server's `sub`
    this.epoch = options.epoch ?? null;
    this.offset = options.since ?? null; // last offset delivered: resume point, dedup line
    this._resumeFrom = options.since ?? null;
    this.state = "pending";
    this.delivered = 0;
    this.round = 0;
    this._buffer = [];
    this._waiters = [];
    if (onMessage) this.on("message", onMessage);
    this.ready = new Promise((resolve, reject) => {
      this._ready = { resolve, reject };
    });
    this.ready.catch(() => {}); // an unobserved failure is reported as an `error` event
  }

  get resumable() {
    const wild = this.pattern.split(".").some((p) => p === "*" || p === ">");
    return !wild && (this.options.mode ?? "all") === "all";
  }

  get active() {
    return this.state !== "unsubscribed" && this.state !== "failed";
  }

  _command() {
    const cmd = { op: "subscribe", topic: this.pattern, ...this.options };
    const since = this.offset ?? this._resumeFrom;
    if (this.resumable && since != null) {
      cmd.since = since;
      if (this.epoch != null) cmd.epoch = this.epoch;
    }
    return cmd;
  }

  _setState(state) {
    if (state !== this.state) {
      this.state = state;
      this.emit("state", { state });
    }
  }

  _onSubscribed(reply, cmd, resubscribe) {
    this.key = reply.sub;
    let recovered = reply.recovered ?? null;
    if (!("since" in cmd)) recovered = resubscribe ? false : null;
    if (recovered === false) this.offset = null; // a new stream: no dedup against old offsets
    if (reply.epoch != null) this.epoch = reply.epoch;
    if (this.offset == null && reply.offset != null) this._resumeFrom = reply.offset;
    const info = { sub: this.key, epoch: this.epoch, offset: reply.offset ?? null, recovered, resubscribe };
    this._setState("subscribed");
    this._ready.resolve(this);
    this.emit("subscribed", info);
    if (recovered !== null) this.emit("recovered", info);
  }

  _deliver(msg) {
    if (!this.active) return false;
    // Offsets are per topic: only a concrete-topic subscription can compare them.
    if (typeof msg.offset === "number" && this.resumable) {
      if (this.offset != null && msg.offset <= this.offset) return false;
      this.offset = msg.offset;
    }
    this.delivered += 1;
    this.emit("message", msg);
    const waiter = this._waiters.shift();
    if (waiter) waiter.resolve({ value: msg, done: false });
    else if (this._handlers.has("iterate")) this._buffer.push(msg);
    return true;
  }

  _end(state, error) {
    if (!this.active) return;
    this._error = error;
    this._setState(state);
    if (error) this._ready.reject(error);
    for (const w of this._waiters.splice(0)) {
      if (error && state === "failed") w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  _fail(err) {
    this.emit("error", { code: err.code, message: err.message });
    this._end("failed", err);
  }

  /** Stop the subscription (the server subscription ends when no twin uses it). */
  async unsubscribe() {
    if (!this.active) return;
    this._end("unsubscribed");
    await this.client._unsubscribe(this);
  }

  [Symbol.asyncIterator]() {
    this.on("iterate", () => {}); // from now on, buffer messages for the iterator
    return {
      next: () => {
        if (this._buffer.length) return Promise.resolve({ value: this._buffer.shift(), done: false });
        if (!this.active) {
          return this._error && this.state === "failed"
            ? Promise.reject(this._error)
            : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
      },
      return: async () => {
        await this.unsubscribe();
        return { value: undefined, done: true };
      },
    };
  }
}

/** Default nack delay in seconds: 1, 2, 4 … capped at 5 minutes. */
export function defaultNackDelay(receiveCount) {
  return Math.min(300, 2 ** Math.max(0, receiveCount - 1));
}

/** A queue consumer: `handler(job)` resolves → ack; throws → nack with backoff. */
export class Consumer {
  constructor(client, queue, options, handler) {
    this.client = client;
    this.queue = queue;
    this.prefetch = options.prefetch ?? 1;
    this.visibilityTimeout = options.visibilityTimeout ?? null;
    this.nackDelay = options.nackDelay ?? defaultNackDelay;
    this.handler = handler;
    this.acked = 0;
    this.nacked = 0;
    this.round = 0;
  }

  _command() {
    const cmd = { op: "consume", queue: this.queue, prefetch: this.prefetch };
    if (this.visibilityTimeout != null) cmd.visibility_timeout = this.visibilityTimeout;
    return cmd;
  }

  async _onJob(frame) {
    const job = {
      queue: this.queue,
      id: frame.msg_id,
      receipt: frame.receipt,
      body: frame.body,
      attributes: frame.attributes ?? {},
      receiveCount: frame.receive_count ?? 1,
      raw: frame,
      extend: (visibilityTimeout) =>
        this.client.request({
          op: "extend",
          queue: this.queue,
          receipt: frame.receipt,
          visibility_timeout: visibilityTimeout,
        }),
    };
    try {
      await this.handler(job);
    } catch (err) {
      try {
        const delay = Math.floor(this.nackDelay(job.receiveCount));
        await this.client.request({ op: "nack", queue: this.queue, receipt: job.receipt, delay });
        this.nacked += 1;
      } catch {
        // not nacked: it comes back after its visibility timeout
      }
      return;
    }
    try {
      const reply = await this.client.request({ op: "ack", queue: this.queue, receipt: job.receipt });
      const failed = (reply.results ?? []).find((r) => r && r.error);
      if (failed) throw new HeraldError("receipt_invalid", JSON.stringify(failed.error));
      this.acked += 1;
    } catch (err) {
      // At-least-once: the job will be redelivered, so handlers must be idempotent.
      this.client.emit("error", { code: "ack_failed", message: String(err) });
    }
  }

  /** Stop taking jobs on later reconnects. */
  stop() {
    this.client._consumers.delete(this.queue);
  }
}

/**
 * One WebSocket to Herald that reconnects forever (full-jitter backoff over the URLs),
 * resumes subscriptions, refreshes its token and queues commands while offline.
 * Events: state, connected, disconnected, reconnecting, reconnect, token_refreshed,
 * lagged, error, closed.
 */
export class HeraldClient extends Emitter {
  constructor(urls, options = {}) {
    super();
    this.urls = Array.isArray(urls) ? [...urls] : [urls];
    if (!this.urls.length) throw new TypeError("at least one URL is required");
    this.token = options.token ?? null;
    this.getToken = options.getToken ?? null;
    this.minBackoffMs = options.minBackoffMs ?? 500;
    this.maxBackoffMs = options.maxBackoffMs ?? 20000;
    this.pingIntervalMs = options.pingIntervalMs ?? 25000;
    this.pingTimeoutMs = options.pingTimeoutMs ?? 20000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10000;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 30000;
    this.tokenRefreshWindowMs = options.tokenRefreshWindowMs ?? 30000;
    this.maxOfflineCommands = options.maxOfflineCommands ?? 1000;
    this.protocol = options.protocol === undefined ? "herald.v1" : options.protocol;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) {
      throw new TypeError("no WebSocket class: pass { WebSocket } (e.g. from the `ws` package)");
    }
    this.state = "idle";
    this.url = null;
    this.attempts = 0;
    this.connects = 0;
    this._urlIndex = 0;
    this._failures = 0;
    this._askedToken = false;
    this._ws = null;
    this._nextId = 0;
    this._pending = new Map();
    this._offline = [];
    this._subs = [];
    this._consumers = new Map();
    this._closing = false;
    this._closeError = null;
    this._reconnectAfterMs = null;
    this._timers = new Set();
    this._refreshTimer = null;
    this._refreshAt = Infinity;
    this._refreshing = false;
    this._openWaiters = [];
    if (options.autoConnect !== false) this.connect();
  }

  // ---- lifecycle -------------------------------------------------------------------

  /** Start connecting (done by the constructor unless autoConnect is false). */
  connect() {
    if (this.state === "idle") this._attempt();
  }

  /** Resolve when the connection is open; reject if the client gave up. */
  waitOpen() {
    if (this._closeError) return Promise.reject(this._closeError);
    if (this.state === "open") return Promise.resolve();
    return new Promise((resolve, reject) => this._openWaiters.push({ resolve, reject }));
  }

  /** Close for good: no reconnect; pending commands and subscriptions end. */
  close() {
    this._closing = true;
    this._finish(new HeraldError("closed", "client closed"), false);
    if (this._ws) this._ws.close(1000, "client closed");
    this._ws = null;
    this._setState("closed");
  }

  _finish(err, failed) {
    if (!this._closeError) this._closeError = err;
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    clearTimeout(this._refreshTimer);
    for (const { reject } of this._offline) reject(err);
    this._offline = [];
    for (const p of this._pending.values()) p.reject(err);
    this._pending.clear();
    for (const sub of this._subs) sub._end(failed ? "failed" : "unsubscribed", err);
    for (const w of this._openWaiters.splice(0)) w.reject(err);
  }

  _setState(state) {
    if (state !== this.state) {
      this.state = state;
      this.emit("state", { state });
    }
  }

  _later(fn, ms) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  /** Full jitter: uniform(0, min(maxBackoffMs, minBackoffMs * 2^failures)). */
  backoffMs(failures) {
    return Math.random() * Math.min(this.maxBackoffMs, this.minBackoffMs * 2 ** Math.min(failures, 30));
  }

  // ---- one connection ----------------------------------------------------------------

  async _attempt() {
    if (this._closing) return;
    const url = this.urls[this._urlIndex % this.urls.length];
    this._urlIndex += 1;
    this.attempts += 1;
    this._setState("connecting");
    try {
      const exp = jwtExp(this.token);
      if (this.getToken && (!this.token || (exp && exp * 1000 < Date.now() + 1000))) {
        this.token = await this._callGetToken();
      }
    } catch (err) {
      this._dropped({ opened: false, code: null, reason: `getToken failed: ${err}` });
      return;
    }
    let ws;
    try {
      ws = this.protocol ? new this.WebSocket(url, this.protocol) : new this.WebSocket(url);
    } catch (err) {
      this._dropped({ opened: false, code: null, reason: String(err) });
      return;
    }
    const session = { ws, url, opened: false, done: false, lastSeen: Date.now(), pinged: false };
    this._ws = ws;
    const connectTimer = this._later(() => {
      if (!session.done && ws.readyState === 0) this._endSession(session, null, "connect timeout");
    }, this.connectTimeoutMs);
    ws.onopen = () => {
      clearTimeout(connectTimer);
      this._timers.delete(connectTimer);
      this.url = url;
      this._liveness(session);
      this._setup(session).catch((err) => {
        if (session.done) return; // the drop is already being handled
        this.emit("error", { code: "setup_failed", message: String(err?.message ?? err) });
        this._endSession(session, null, `connection setup failed: ${err}`);
      });
    };
    ws.onmessage = (ev) => {
      session.lastSeen = Date.now();
      session.pinged = false;
      let frame;
      try {
        frame = JSON.parse(typeof ev.data === "string" ? ev.data : String(ev.data));
      } catch {
        return;
      }
      if (frame && typeof frame === "object") this._dispatch(frame);
    };
    // Browsers follow an error with a close event, but Node 20's WebSocket may not after
    // a refused connection: end the session on either.
    ws.onerror = () => {
      if (ws.readyState !== 1) this._endSession(session, null, "connection failed");
    };
    ws.onclose = (ev) => this._endSession(session, ev.code ?? null, ev.reason ?? "");
  }

  _liveness(session) {
    // Browsers hide WebSocket pings, so quiet connections are probed with a `ping` command.
    const check = () => {
      if (session.done) return;
      const quiet = Date.now() - session.lastSeen;
      if (session.pinged && quiet >= this.pingIntervalMs + this.pingTimeoutMs) {
        this._endSession(session, null, "no data or pong: connection presumed dead");
        return;
      }
      if (!session.pinged && quiet >= this.pingIntervalMs) {
        session.pinged = true;
        try {
          session.ws.send(JSON.stringify({ op: "ping" }));
        } catch {
          // the close event will follow
        }
      }
      session.timer = this._later(check, Math.max(20, Math.min(this.pingIntervalMs, this.pingTimeoutMs) / 4));
    };
    check();
  }

  _endSession(session, code, reason) {
    if (session.done) return;
    session.done = true;
    clearTimeout(session.timer);
    session.ws.onopen = session.ws.onmessage = session.ws.onclose = session.ws.onerror = null;
    if (session.ws.readyState <= 1) {
      try {
        session.ws.close();
      } catch {
        // already closing
      }
    }
    if (this._ws === session.ws) this._ws = null;
    this._connectionLost();
    if (this._closing) return;
    this._dropped({ opened: session.opened, code, reason });
  }

  _dropped({ opened, code, reason }) {
    this._setState("waiting");
    this.emit("disconnected", { code, reason });
    if (FATAL_CODES.has(code)) return this._giveUp(code, reason);
    let immediate = false;
    if (code === CLOSE_UNAUTHORIZED) {
      if (opened) this._askedToken = false;
      if (!this.getToken || this._askedToken) return this._giveUp(code, reason);
      this._askedToken = true;
      immediate = true;
      this._callGetToken().then(
        (token) => {
          this.token = token;
          this._scheduleAttempt(opened, 0);
        },
        (err) => this._giveUp(code, `getToken failed: ${err}`),
      );
    } else if (opened) {
      this._askedToken = false;
    }
    if (!immediate) this._scheduleAttempt(opened, null);
  }

  _scheduleAttempt(opened, forcedMs) {
    this._failures = opened ? 0 : this._failures + 1;
    let delay = forcedMs ?? this.backoffMs(this._failures);
    if (this._reconnectAfterMs != null) {
      delay = this._reconnectAfterMs;
      this._reconnectAfterMs = null;
    }
    this.emit("reconnecting", { attempt: this.attempts + 1, delay });
    this._later(() => this._attempt(), delay);
  }

  _giveUp(code, reason) {
    this._closing = true;
    const err = new HeraldError("closed", `connection closed with ${code}: ${reason}`);
    err.closeCode = code;
    this.emit("error", { code: "closed", message: err.message });
    this._finish(err, true);
    this._setState("closed");
    this.emit("closed", { code, reason });
  }

  async _setup(session) {
    if (this.token) {
      this._setState("authenticating");
      await this._sendNow({ op: "auth", token: this.token });
      this._authenticated();
    }
    // Until every live subscription and consumer was sent on this connection (some
    // may be added while replies are awaited).
    for (;;) {
      const todo = this._subs.filter((s) => s.round !== this.attempts && s.active);
      if (!todo.length) break;
      for (const sub of todo) {
        sub.round = this.attempts;
        const resub = sub.state !== "pending";
        if (resub) sub._setState("resubscribing");
        await this._subscribeNow(sub, resub);
      }
    }
    for (;;) {
      const consumer = [...this._consumers.values()].find((c) => c.round !== this.attempts);
      if (!consumer) break;
      consumer.round = this.attempts;
      try {
        await this._sendNow(consumer._command());
      } catch (err) {
        if (!(err instanceof HeraldError) || err.code === "connection_lost") throw err;
        this._consumers.delete(consumer.queue);
        this.emit("error", { code: err.code, message: err.message });
      }
    }
    if (session.done) return;
    session.opened = true;
    this._setState("open");
    this.connects += 1;
    for (const w of this._openWaiters.splice(0)) w.resolve();
    this.emit("connected", { url: this.url });
    while (this._offline.length && this.state === "open") this._transmit(this._offline.shift());
  }

  _connectionLost() {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    this._refreshAt = Infinity;
    // Resend what is safe, in order, ahead of newer offline commands; fail the rest.
    const keep = [];
    for (const p of this._pending.values()) {
      clearTimeout(p.timer);
      const op = p.cmd.op;
      if (!p.internal && (RESENDABLE.has(op) || (op === "publish" && "msg_id" in p.cmd))) keep.push(p);
      else p.reject(new HeraldError("connection_lost", `connection lost during ${op}`));
    }
    this._pending.clear();
    this._offline.unshift(...keep);
  }

  // ---- frames ------------------------------------------------------------------------

  _dispatch(frame) {
    const op = frame.op;
    if (frame.id != null && this._pending.has(frame.id)) {
      const p = this._pending.get(frame.id);
      this._pending.delete(frame.id);
      clearTimeout(p.timer);
      if (op === "error") p.reject(new HeraldError(frame.code, frame.message, frame));
      else p.resolve(frame);
      return;
    }
    switch (op) {
      case "msgs":
        for (const sub of this._subs) {
          if (sub.key === frame.sub) for (const m of frame.msgs ?? []) sub._deliver(m);
        }
        break;
      case "job": {
        const consumer = this._consumers.get(frame.queue);
        if (consumer) consumer._onJob(frame);
        break;
      }
      case "lagged": {
        const info = { sub: frame.sub, dropped: frame.dropped };
        for (const sub of this._subs) if (sub.key === frame.sub) sub.emit("lagged", info);
        this.emit("lagged", info);
        break;
      }
      case "reconnect":
        this._reconnectAfterMs = Math.max(0, Number(frame.after_ms) || 0);
        this.emit("reconnect", { reason: frame.reason, afterMs: frame.after_ms });
        break;
      case "token_expiring": {
        // Refresh at half the time left, unless our token is newer than the notice.
        const ours = jwtExp(this.token);
        if (!(ours && typeof frame.exp === "number" && ours > frame.exp)) {
          this._scheduleRefresh(Math.max(0, (Number(frame.in_ms) || 0) / 2));
        }
        break;
      }
      case "error": {
        const info = { code: frame.code, message: frame.message };
        if (frame.sub) {
          for (const sub of this._subs.filter((s) => s.key === frame.sub)) {
            sub._fail(new HeraldError(frame.code, frame.message, frame));
            this._subs.splice(this._subs.indexOf(sub), 1);
          }
        }
        this.emit("error", info);
        break;
      }
      default:
        break;
    }
  }

  // ---- commands ----------------------------------------------------------------------

  _transmit(p) {
    if (!this._ws || this._ws.readyState !== 1) {
      this._offline.push(p);
      return;
    }
    this._nextId += 1;
    const id = this._nextId;
    this._pending.set(id, p);
    p.timer = setTimeout(() => {
      if (this._pending.get(id) === p) {
        this._pending.delete(id);
        p.reject(new HeraldError("timeout", `no reply to ${p.cmd.op} within ${this.commandTimeoutMs} ms`));
      }
    }, this.commandTimeoutMs);
    this._ws.send(JSON.stringify({ ...p.cmd, id }));
  }

  _command(cmd, internal) {
    let p;
    const promise = new Promise((resolve, reject) => {
      p = { cmd, internal, resolve, reject };
    });
    return { p, promise };
  }

  _sendNow(cmd) {
    const { p, promise } = this._command(cmd, true);
    this._transmit(p);
    return promise;
  }

  /**
   * Send any command; resolves with its reply. While disconnected it waits in a bounded
   * queue; a full queue rejects with `offline_queue_full`, a drop with the command in
   * flight rejects with `connection_lost` unless resending it is safe.
   */
  request(cmd) {
    if (this._closeError) return Promise.reject(this._closeError);
    const { p, promise } = this._command(cmd, false);
    if (this.state === "open") this._transmit(p);
    else if (this._offline.length >= this.maxOfflineCommands) {
      return Promise.reject(
        new HeraldError("offline_queue_full", `disconnected and ${this.maxOfflineCommands} commands are already queued`),
      );
    } else this._offline.push(p);
    return promise;
  }

  /** Publish; with `id` (idempotency key) a retry after a reconnect is applied once. */
  publish(topic, data, options = {}) {
    const cmd = { op: "publish", topic, data };
    if (options.attributes) cmd.attributes = options.attributes;
    if (options.id != null) cmd.msg_id = options.id;
    return this.request(cmd);
  }

  /** Subscribe; `await sub.ready` for the server's confirmation. */
  subscribe(pattern, options = {}, onMessage = undefined) {
    if (typeof options === "function") [options, onMessage] = [{}, options];
    const sub = new Subscription(this, pattern, options, onMessage);
    if (this._closeError) {
      sub._end("failed", this._closeError);
      return sub;
    }
    this._subs.push(sub);
    if (this.state === "open") {
      sub.round = this.attempts;
      this._subscribeNow(sub, false);
    }
    return sub;
  }

  async _subscribeNow(sub, resubscribe) {
    const cmd = sub._command();
    let reply;
    try {
      reply = await this._sendNow(cmd);
    } catch (err) {
      if (err.code === "connection_lost") return; // retried on the next connection
      sub._fail(err);
      const i = this._subs.indexOf(sub);
      if (i >= 0) this._subs.splice(i, 1);
      return;
    }
    sub._onSubscribed(reply, cmd, resubscribe);
  }

  async _unsubscribe(sub) {
    const i = this._subs.indexOf(sub);
    if (i >= 0) this._subs.splice(i, 1);
    const shared = this._subs.some((s) => s.key === sub.key);
    if (sub.key && !shared && this.state === "open") {
      try {
        await this.request({ op: "unsubscribe", sub: sub.key });
      } catch {
        // gone with the connection anyway
      }
    }
  }

  /** Consume a queue: ack when `handler(job)` resolves, nack with backoff when it throws. */
  async consume(queue, options = {}, handler = undefined) {
    if (typeof options === "function") [options, handler] = [{}, options];
    if (this._consumers.has(queue)) throw new TypeError(`already consuming ${queue}`);
    const consumer = new Consumer(this, queue, options, handler);
    this._consumers.set(queue, consumer);
    if (this.state === "open") {
      consumer.round = this.attempts;
      try {
        await this._sendNow(consumer._command());
      } catch (err) {
        if (err.code !== "connection_lost") {
          this._consumers.delete(queue);
          throw err;
        }
      }
    }
    return consumer;
  }

  // ---- tokens ------------------------------------------------------------------------

  async _callGetToken() {
    const token = await this.getToken();
    if (typeof token !== "string" || !token) throw new HeraldError("unauthorized", "getToken returned no token");
    return token;
  }

  _authenticated() {
    const exp = jwtExp(this.token);
    if (exp == null || !this.getToken) return;
    const left = exp * 1000 - Date.now();
    // Refresh `window` before exp, but not before half the lifetime left, so a
    // short-lived token does not turn into a refresh loop.
    this._scheduleRefresh(Math.max(0, left - Math.min(this.tokenRefreshWindowMs, left / 2)));
  }

  _scheduleRefresh(delayMs) {
    if (!this.getToken || this._refreshing) return;
    const at = Date.now() + delayMs;
    if (this._refreshTimer && this._refreshAt <= at) return;
    clearTimeout(this._refreshTimer);
    this._refreshAt = at;
    this._refreshTimer = setTimeout(() => this._refresh(), delayMs);
  }

  async _refresh() {
    this._refreshTimer = null;
    this._refreshAt = Infinity;
    if (this.state !== "open" || this._refreshing) return;
    this._refreshing = true;
    let reply;
    try {
      this.token = await this._callGetToken();
      reply = await this._sendNow({ op: "auth", token: this.token });
      this.emit("token_refreshed", { exp: reply.exp ?? jwtExp(this.token) });
    } catch (err) {
      this.emit("error", { code: "token_refresh_failed", message: String(err?.message ?? err) });
      return;
    } finally {
      this._refreshing = false;
    }
    this._authenticated();
  }
}

export default HeraldClient;
