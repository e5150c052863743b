// Issue 12 scenarios for the JS client, shared by Node (node.test.js) and Chromium
// (page.html). They drive real `herald serve` processes through the control server of
// tests/clients/lab.py; the Python client runs the same scenarios in
// tests/clients/test_python_client.py.

export function makeCtx(HeraldClient, ctlUrl) {
  const ctl = async (action, args = {}) => {
    const r = await fetch(`${ctlUrl}/ctl/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(args),
    });
    const body = await r.json();
    if (!r.ok) throw new Error(`ctl ${action} failed: ${body.error}`);
    return body;
  };
  return { HeraldClient, ctl };
}

function check(cond, message) {
  if (!cond) throw new Error(`check failed: ${message}`);
}

function same(actual, expected, message) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${message}: expected ${e}, got ${a}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rand = () => Math.random().toString(16).slice(2, 10);
const range = (a, b) => Array.from({ length: b - a }, (_, i) => a + i);

async function until(cond, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// Run `body` with `client`, then close the client whatever happens.
async function closing(client, body) {
  try {
    return await body(client);
  } finally {
    client.close();
  }
}

export const scenarios = {
  async wildcard_filter({ HeraldClient, ctl }) {
    const env = await ctl("setup", { kind: "basic" });
    const r = rand();
    await closing(new HeraldClient(env.ws, { token: env.apiKey }), async (client) => {
      const got = [];
      const sub = client.subscribe(`wf.${r}.*`, { filter: { kind: ["keep"] } }, (m) => got.push(m.data));
      await sub.ready;
      for (let i = 0; i < 30; i++) {
        const kind = i % 3 === 0 ? "keep" : "drop";
        await client.publish(`wf.${r}.${"ab"[i % 2]}`, i, { attributes: { kind } });
      }
      await client.publish(`other.${r}.a`, -1, { attributes: { kind: "keep" } });
      await client.publish(`wf.${r}.end`, 99, { attributes: { kind: "keep" } });
      await until(() => got.length >= 11, "11 messages");
      await sleep(100);
      same(got, [...range(0, 30).filter((i) => i % 3 === 0), 99], "filtered messages");
    });
  },

  async drain({ HeraldClient, ctl }) {
    const env = await ctl("setup", { kind: "drain" });
    const topic = `drain.${rand()}`;
    await closing(new HeraldClient(env.ws, { minBackoffMs: 100, maxBackoffMs: 1000 }), async (client) => {
      const notices = [];
      client.on("reconnect", (n) => notices.push(n));
      const got = [];
      const sub = client.subscribe(topic, {}, (m) => got.push(m.data));
      await sub.ready;
      same(client.url, env.ws[0], "connected to the first gateway");
      await ctl("publish_steady", { id: env.id, topic, n: 500, interval_ms: 4, sigterm_at: 150 });
      await until(() => got.length >= 500, "500 messages", 40000);
      await sleep(200);
      same(got, range(0, 500), "all 500 exactly once, in order");
      same(client.url, env.ws[1], "moved to the other gateway");
      same(notices.length, 1, "one reconnect notice");
    });
  },

  async crash({ HeraldClient, ctl }) {
    const env = await ctl("setup", { kind: "crash" });
    const topic = `crash.${rand()}`;
    await closing(new HeraldClient(env.ws, { minBackoffMs: 100, maxBackoffMs: 1000 }), async (client) => {
      const got = [];
      const resumes = [];
      const sub = client.subscribe(topic, {}, (m) => got.push(m));
      sub.on("recovered", (e) => resumes.push(e.recovered));
      await sub.ready;
      for (let i = 0; i < 5; i++) await client.publish(topic, i, { id: `${topic}-${i}` });
      await until(() => got.length >= 5, "5 messages");
      const before = client.attempts;
      await ctl("kill_restart", { id: env.id, delay_s: 2 });
      await until(() => client.state !== "open", "the drop");
      // Published while the gateway is down: queued, sent once it is back.
      const offline = range(5, 10).map((i) => client.publish(topic, i, { id: `${topic}-${i}` }));
      await until(() => got.length >= 10, "10 messages", 30000);
      await Promise.all(offline);
      await sleep(200);
      const attempts = client.attempts - before;
      // Pipelined publishes may be applied in any order on the redis engine: each
      // once, and the subscriber sees them in offset order.
      same(got.slice(0, 5).map((m) => m.data), range(0, 5), "before the crash");
      same(got.slice(5).map((m) => m.data).sort(), range(5, 10), "after the crash, once each");
      const offsets = got.map((m) => m.offset);
      same(offsets, [...offsets].sort((a, b) => a - b), "offset order");
      same(new Set(offsets).size, 10, "no duplicate");
      check(attempts >= 2 && attempts <= 25, `2..25 attempts in ~2 s of downtime, got ${attempts}`);
      same(client.connects, 2, "connections");
      same(resumes, [true], "resumed with recovered: true");
    });
  },

  async liveness({ HeraldClient, ctl }) {
    const env = await ctl("setup", { kind: "crash" });
    await closing(new HeraldClient(env.ws, {
      pingIntervalMs: 300,
      pingTimeoutMs: 300,
      connectTimeoutMs: 500,
      minBackoffMs: 100,
    }), async (client) => {
      const drops = [];
      client.on("disconnected", (e) => drops.push(e.reason));
      const topic = `live.${rand()}`;
      const got = [];
      await client.subscribe(topic, {}, (m) => got.push(m.data)).ready;
      await ctl("freeze", { id: env.id, frozen: true });
      let withId;
      let withoutId;
      try {
        // In flight when the connection dies: resent with its id, refused without.
        withId = client.publish(topic, "once", { id: `${topic}-1` });
        withoutId = client.publish(topic, "maybe").then(
          () => null,
          (e) => e,
        );
        await until(() => drops.length > 0, "liveness timeout");
      } finally {
        await ctl("freeze", { id: env.id, frozen: false });
      }
      await until(() => client.connects === 2, "reconnected");
      await withId;
      same((await withoutId)?.code, "connection_lost", "publish without id");
      await client.publish(topic, "after");
      await until(() => got.includes("after"), "the last message");
      check(drops[0].includes("presumed dead"), `first drop: ${drops[0]}`);
      same(got.filter((d) => d === "once").length, 1, "the resent publish, applied once");
    });
  },

  async unrecovered({ HeraldClient, ctl }) {
    const env = await ctl("setup", { kind: "basic" });
    const topic = `small.${rand()}`;
    await closing(new HeraldClient(env.ws, { token: env.apiKey }), async (client) => {
      for (let i = 0; i < 20; i++) await client.publish(topic, i);
      const got = [];
      const events = [];
      const sub = client.subscribe(topic, { since: 1 }, (m) => got.push(m.data));
      sub.on("recovered", (e) => events.push(e.recovered));
      await sub.ready;
      await client.publish(topic, 20);
      await until(() => got.length >= 1, "the live message");
      same(events, [false], "recovered events");
      same(got, [20], "live after the failed resume");
    });
  },

  async token_refresh({ HeraldClient, ctl }) {
    await ctl("setup", { kind: "basic" });
    const env = await ctl("setup", { kind: "basic" });
    let calls = 0;
    const getToken = async () => {
      calls += 1;
      return (await ctl("token", { ttl: 3 })).token;
    };
    await closing(new HeraldClient(env.ws, { getToken }), async (client) => {
      const refreshed = [];
      client.on("token_refreshed", (e) => refreshed.push(e));
      const topic = `tok.${rand()}`;
      const got = [];
      await client.subscribe(topic, {}, (m) => got.push(m.data)).ready;
      await sleep(4500); // past the first token's exp
      await client.publish(topic, "still here");
      await until(() => got.length >= 1, "a message after exp");
      same(client.connects, 1, "one connection");
      same(client.state, "open", "state");
      check(refreshed.length >= 1 && calls >= 2, `refreshed ${refreshed.length}, getToken ${calls}`);
    });
  },

  async queue_ack_nack({ HeraldClient, ctl }) {
    const env = await ctl("setup", { kind: "basic" });
    const queue = `q-${rand()}`;
    await ctl("queue", { name: queue, bodies: [{ n: 0 }, { n: 1 }, { n: 2 }] });
    await closing(new HeraldClient(env.ws, { token: env.apiKey }), async (client) => {
      const seen = [];
      const consumer = await client.consume(queue, { prefetch: 3, nackDelay: () => 0 }, async (job) => {
        seen.push([job.body.n, job.receiveCount]);
        if (job.body.n === 1 && job.receiveCount === 1) throw new Error("first try fails");
      });
      await until(() => consumer.acked === 3, "3 acks");
      same(seen.map(String).sort(), ["0,1", "1,1", "1,2", "2,1"], "deliveries");
      same(consumer.nacked, 1, "nacks");
      const stats = await ctl("queue_stats", { name: queue });
      same([stats.visible, stats.in_flight, stats.deleted_total], [0, 0, 3], "queue stats");
    });
  },

  async consumer_killed({ HeraldClient, ctl }) {
    const env = await ctl("setup", { kind: "basic" });
    const queue = `qk-${rand()}`;
    await ctl("queue", { name: queue, bodies: [{ charge: 1 }] });
    const first = new HeraldClient(env.ws, { token: env.apiKey });
    let firstJob = null;
    await first.consume(queue, (job) => {
      firstJob = job;
      return new Promise(() => {}); // never finishes: the consumer dies mid-job
    });
    await until(() => firstJob !== null, "the first delivery");
    first.close();
    await closing(new HeraldClient(env.ws, { token: env.apiKey }), async (second) => {
      const jobs = [];
      const consumer = await second.consume(queue, (job) => {
        jobs.push([job.id, job.receiveCount]);
      });
      await until(() => consumer.acked === 1, "the redelivery acked");
      same(jobs, [[firstJob.id, 2]], "the same job, second delivery");
    });
  },

  async offline_bounded({ HeraldClient }) {
    // Nothing listens on port 9: the client stays disconnected.
    const client = new HeraldClient("ws://127.0.0.1:9/ws", { maxOfflineCommands: 2, minBackoffMs: 5000 });
    const first = client.publish("a.b", 1);
    const second = client.publish("a.b", 2);
    let full = null;
    await client.publish("a.b", 3).catch((e) => (full = e));
    same(full?.code, "offline_queue_full", "third command");
    client.close();
    for (const p of [first, second]) {
      const err = await p.catch((e) => e);
      same(err?.code, "closed", "queued commands fail on close");
    }
  },

  async close_1008_never_loops({ HeraldClient, ctl }) {
    const env = await ctl("setup", { kind: "basic" });
    const client = new HeraldClient(env.ws, { token: env.apiKey, minBackoffMs: 50 });
    const closed = [];
    client.on("closed", (e) => closed.push(e.code));
    await client.waitOpen();
    for (let i = 0; i < 10; i++) await client.request({ op: "nonsense" }).catch(() => {});
    await until(() => client.state === "closed", "closed");
    await sleep(500);
    same(client.attempts, 1, "attempts");
    same(closed, [1008], "closed events");
  },

  async unauthorized_4401({ HeraldClient, ctl }) {
    const env = await ctl("setup", { kind: "basic" });
    let calls = 0;
    const client = new HeraldClient(env.ws, {
      token: "also-invalid",
      getToken: () => {
        calls += 1;
        return "not-a-valid-token";
      },
    });
    await until(() => client.state === "closed", "closed");
    same([client.attempts, calls], [2, 1], "attempts and getToken calls");
  },
};
