// Herald admin console: polls the HTTP API (/v1/topics, /v1/stats, /v1/queues,
// /v1/subscriptions) and tails topics over the WebSocket with the JS client.
// With auth on, every call carries the API key the operator typed (kept for this tab).
import { HeraldClient } from "/client/herald.js";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "herald.admin.apiKey";
const POINTS = 60;
const CHARTS = [
  { id: "connections", label: "Connections", value: (s) => s.connections },
  { id: "subscriptions", label: "Subscriptions", value: (s) => s.subscriptions },
  { id: "publishes", label: "Publishes/s", rate: (s) => s.messages_published },
  { id: "deliveries", label: "Deliveries/s", rate: (s) => s.messages_delivered },
  { id: "drops", label: "Drops/s", rate: (s) => s.messages_dropped },
];

let apiKey = sessionStorage.getItem(KEY_STORE) || "";
let lastStats = null;
let lastTopics = new Map(); // pattern -> {messages, at}
let queues = [];
let tail = null;
const series = Object.fromEntries(CHARTS.map((c) => [c.id, []]));

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function showError(err) {
  $("alert").textContent = err ? String(err.message ?? err) : "";
}

function confirmAction(title, text) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = title.split(" ")[0];
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

// ---- access ------------------------------------------------------------------------

async function open() {
  try {
    const overview = await api("GET", "/v1/topics");
    $("login").hidden = true;
    $("console").hidden = false;
    $("logout").hidden = !overview.auth;
    showError(null);
    start();
  } catch (err) {
    $("console").hidden = true;
    if (err.status === 401 || err.status === 403) {
      $("login").hidden = false;
      showError(apiKey ? `Refused: ${err.message}` : null);
      if (apiKey) sessionStorage.removeItem(KEY_STORE);
      apiKey = "";
    } else showError(err);
  }
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  apiKey = $("api-key").value.trim();
  sessionStorage.setItem(KEY_STORE, apiKey);
  open();
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORE);
  location.reload();
});

// ---- charts (plain SVG) ----------------------------------------------------------------

function buildCharts() {
  for (const c of CHARTS) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${POINTS - 1} 100`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `${c.label}, last ${POINTS} seconds`);
    svg.append(document.createElementNS("http://www.w3.org/2000/svg", "polyline"));
    const value = el("strong", { id: `chart-${c.id}` }, "–");
    $("charts").append(el("figure", { class: "chart card" }, el("figcaption", {}, c.label, value), svg));
  }
}

function drawChart(c, v) {
  const points = series[c.id];
  points.push(v);
  if (points.length > POINTS) points.shift();
  const max = Math.max(1, ...points);
  // Spread what we have over the width until a minute of samples fills it.
  const step = (POINTS - 1) / Math.max(1, points.length - 1);
  const coords = points.map((p, i) => `${(i * step).toFixed(2)},${(100 - (p / max) * 95).toFixed(1)}`).join(" ");
  const figure = $(`chart-${c.id}`).closest("figure");
  figure.querySelector("polyline").setAttribute("points", coords);
  $(`chart-${c.id}`).textContent = Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function drawCharts(totals, now) {
  for (const c of CHARTS) {
    let v;
    if (c.value) v = c.value(totals) ?? 0;
    else if (lastStats) v = Math.max(0, ((c.rate(totals) ?? 0) - (c.rate(lastStats.s) ?? 0)) / ((now - lastStats.at) / 1000));
    else continue;
    drawChart(c, v);
  }
  lastStats = { s: totals, at: now };
}

async function pollEngine() {
  const s = await api("GET", "/v1/stats");
  $("engine").textContent = `engine: ${s.engine}${s.draining ? " (this pod is draining)" : ""}`;
}

// ---- topics ------------------------------------------------------------------------------

async function pollTopics() {
  const t = await api("GET", "/v1/topics");
  const now = performance.now();
  // Summed over every pod, so the charts do not jump between the pods a load balancer picks.
  drawCharts(t.totals, now);
  $("pods").textContent = `(${t.pods} pod${t.pods === 1 ? "" : "s"})`;
  const rows = t.topics.map((row) => {
    const prev = lastTopics.get(row.pattern);
    const rate = prev ? Math.max(0, (row.messages - prev.messages) / ((now - prev.at) / 1000)) : 0;
    return el("tr", {}, el("td", {}, el("code", {}, row.pattern)), el("td", { class: "num" }, row.subscribers), el("td", { class: "num" }, rate.toFixed(1)));
  });
  lastTopics = new Map(t.topics.map((row) => [row.pattern, { messages: row.messages, at: now }]));
  $("topics").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 3, class: "muted" }, "No subscriptions"))]));
  const rules = t.history.map((r) => el("tr", {}, el("td", {}, el("code", {}, r.pattern)), el("td", { class: "num" }, r.size ?? "–"), el("td", { class: "num" }, r.ttl ?? "–")));
  $("history").replaceChildren(...(rules.length ? rules : [el("tr", {}, el("td", { colspan: 3, class: "muted" }, "No history rules"))]));
}

$("presence-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const topic = $("presence-topic").value.trim();
  try {
    const p = await api("GET", `/v1/topics/${encodeURIComponent(topic)}/presence`);
    $("presence-result").textContent = `${p.topic}: ${p.subscribers} subscriber${p.subscribers === 1 ? "" : "s"} on ${p.pods} pod${p.pods === 1 ? "" : "s"}`;
  } catch (err) {
    $("presence-result").textContent = `${topic}: ${err.message}`;
  }
});

// ---- queues ------------------------------------------------------------------------------

function depth(q) {
  return q ? q.visible + q.in_flight + q.delayed : 0;
}

async function pollQueues() {
  queues = (await api("GET", "/v1/queues")).queues;
  const byName = new Map(queues.map((q) => [q.name, q]));
  const isDlq = new Set(queues.map((q) => q.dead_letter?.queue).filter(Boolean));
  const rows = queues.map((q) => {
    const dlq = q.dead_letter ? byName.get(q.dead_letter.queue) : null;
    const actions = el(
      "td",
      {},
      el("button", { type: "button", class: "secondary", "aria-label": `Peek ${q.name}`, onclick: () => peek(q.name) }, "Peek"),
      " ",
      isDlq.has(q.name)
        ? el("button", { type: "button", class: "secondary", "aria-label": `Redrive ${q.name}`, onclick: () => redrive(q.name) }, "Redrive")
        : "",
      " ",
      el("button", { type: "button", class: "danger", "aria-label": `Purge ${q.name}`, onclick: () => purge(q) }, "Purge"),
      " ",
      el("button", { type: "button", class: "danger", "aria-label": `Delete ${q.name}`, onclick: () => deleteQueue(q) }, "Delete"),
    );
    return el(
      "tr",
      { "aria-label": q.name, "data-queue": q.name },
      el("th", { scope: "row" }, el("code", {}, q.name), q.fifo ? " (fifo)" : "", isDlq.has(q.name) ? " (dead-letter)" : ""),
      el("td", { class: "num" }, q.visible),
      el("td", { class: "num" }, q.in_flight),
      el("td", { class: "num" }, q.delayed),
      el("td", { class: "num" }, q.oldest_age_s.toFixed(1)),
      el("td", {}, q.dead_letter ? `${q.dead_letter.queue} after ${q.dead_letter.max_receive_count}` : "–"),
      el("td", { class: "num", "aria-label": `DLQ depth of ${q.name}` }, q.dead_letter ? depth(dlq) : "–"),
      actions,
    );
  });
  $("queues").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No queues"))]));
  for (const [id, first] of [["sub-queue", []], ["queue-dlq", [el("option", { value: "" }, "none")]]]) {
    const select = $(id);
    const chosen = select.value;
    select.replaceChildren(...first, ...queues.map((q) => el("option", { value: q.name }, q.name)));
    if (byName.has(chosen)) select.value = chosen;
  }
}

$("queue-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("queue-name").value.trim();
  const body = { fifo: name.endsWith(".fifo") };
  if ($("queue-dlq").value) body.dead_letter = { queue: $("queue-dlq").value, max_receive_count: Number($("queue-max").value) };
  try {
    await api("PUT", `/v1/queues/${encodeURIComponent(name)}`, body);
    showError(null);
    await pollQueues();
  } catch (err) {
    showError(err);
  }
});

async function deleteQueue(q) {
  if (!(await confirmAction(`Delete ${q.name}?`, `The queue, its ${depth(q)} messages and the subscriptions that feed it are deleted.`))) return;
  try {
    await api("DELETE", `/v1/queues/${encodeURIComponent(q.name)}`);
    await pollQueues();
  } catch (err) {
    showError(err);
  }
}

async function peek(name) {
  try {
    const { messages } = await api("GET", `/v1/queues/${encodeURIComponent(name)}/peek?max=20`);
    $("peek-title").textContent = `Messages in ${name} (oldest first, not received)`;
    $("peek-list").replaceChildren(
      ...(messages.length
        ? messages.map((m) =>
            el(
              "li",
              { "aria-label": `Message ${m.id}` },
              el("div", { class: "muted" }, `${m.id} · received ${m.receive_count}×${m.source ? ` · from ${m.source}` : ""}`),
              el("pre", { class: "peek" }, JSON.stringify({ body: m.body, attributes: m.attributes }, null, 1)),
            ),
          )
        : [el("li", { class: "muted" }, "empty")]),
    );
    $("peek").hidden = false;
  } catch (err) {
    showError(err);
  }
}

async function redrive(name) {
  try {
    const { moved } = await api("POST", `/v1/queues/${encodeURIComponent(name)}/redrive`);
    showError(null);
    $("peek-title").textContent = `Redrove ${moved} message${moved === 1 ? "" : "s"} from ${name}`;
    $("peek-list").replaceChildren();
    $("peek").hidden = false;
    await pollQueues();
  } catch (err) {
    showError(err);
  }
}

async function purge(q) {
  if (!(await confirmAction(`Purge ${q.name}?`, `This deletes its ${depth(q)} messages, in flight too. It cannot be undone.`))) return;
  try {
    const { purged } = await api("POST", `/v1/queues/${encodeURIComponent(q.name)}/purge`);
    $("peek-title").textContent = `Purged ${purged} message${purged === 1 ? "" : "s"} from ${q.name}`;
    $("peek-list").replaceChildren();
    $("peek").hidden = false;
    await pollQueues();
  } catch (err) {
    showError(err);
  }
}

// ---- subscriptions -------------------------------------------------------------------------

async function pollSubscriptions() {
  const { subscriptions } = await api("GET", "/v1/subscriptions");
  const rows = subscriptions.map((s) =>
    el(
      "tr",
      { "aria-label": `${s.topic} to ${s.queue}` },
      el("td", {}, el("code", {}, s.topic)),
      el("td", {}, s.queue),
      el("td", {}, el("code", {}, s.filter_policy ? JSON.stringify(s.filter_policy) : "–")),
      el("td", {}, el("button", { type: "button", class: "danger", "aria-label": `Delete subscription ${s.topic} to ${s.queue}`, onclick: () => deleteSubscription(s) }, "Delete")),
    ),
  );
  $("subs").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No subscriptions"))]));
}

async function deleteSubscription(s) {
  if (!(await confirmAction("Delete subscription?", `${s.topic} → ${s.queue}: new messages stop reaching the queue.`))) return;
  try {
    await api("DELETE", `/v1/subscriptions/${encodeURIComponent(s.id)}`);
    await pollSubscriptions();
  } catch (err) {
    showError(err);
  }
}

function parseJson(text, what) {
  if (!text.trim()) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${what} is not valid JSON`);
  }
}

$("sub-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const body = { topic: $("sub-topic").value.trim(), queue: $("sub-queue").value };
    const policy = parseJson($("sub-filter").value, "the filter policy");
    if (policy !== undefined) body.filter_policy = policy;
    await api("POST", "/v1/subscriptions", body);
    showError(null);
    await pollSubscriptions();
  } catch (err) {
    showError(err);
  }
});

// ---- publish -------------------------------------------------------------------------------

$("publish-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const body = { topic: $("pub-topic").value.trim(), data: parseJson($("pub-data").value, "data") ?? null };
    const attributes = parseJson($("pub-attrs").value, "attributes");
    if (attributes !== undefined) body.attributes = attributes;
    const r = await api("POST", "/v1/publish", body);
    $("publish-result").textContent = `published ${r.id}${r.offset != null ? ` at offset ${r.offset}` : ""}`;
  } catch (err) {
    $("publish-result").textContent = `not published: ${err.message}`;
  }
});

// ---- live tail -----------------------------------------------------------------------------

function stopTail() {
  if (tail) tail.close();
  tail = null;
  $("tail-start").disabled = false;
  $("tail-stop").disabled = true;
}

$("tail-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  stopTail();
  let filter;
  try {
    filter = parseJson($("tail-filter").value, "the filter");
  } catch (err) {
    $("tail-status").textContent = err.message;
    return;
  }
  const pattern = $("tail-pattern").value.trim();
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  tail = new HeraldClient(url, { token: apiKey || null, maxBackoffMs: 5000 });
  tail.on("state", ({ state }) => ($("tail-status").textContent = `tail ${pattern}: ${state}`));
  const sub = tail.subscribe(pattern, filter ? { filter } : {}, (msg) => {
    const log = $("tail-log");
    log.prepend(el("li", {}, `${msg.topic} ${JSON.stringify(msg.data)}${msg.attributes ? ` ${JSON.stringify(msg.attributes)}` : ""}`));
    while (log.children.length > 100) log.lastChild.remove();
  });
  sub.on("error", (e) => ($("tail-status").textContent = `tail ${pattern}: ${e.code}: ${e.message}`));
  $("tail-start").disabled = true;
  $("tail-stop").disabled = false;
});
$("tail-stop").addEventListener("click", stopTail);

// ---- polling -------------------------------------------------------------------------------

function every(ms, fn) {
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try {
      await fn();
    } catch (err) {
      if (err.status === 401 || err.status === 403) location.reload();
      else showError(err);
    } finally {
      running = false;
    }
  };
  tick();
  setInterval(tick, ms);
}

let started = false;
function start() {
  if (started) return;
  started = true;
  buildCharts();
  every(1000, pollTopics);
  every(5000, pollEngine);
  every(2000, pollQueues);
  every(3000, pollSubscriptions);
}

open();
