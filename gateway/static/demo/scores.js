// Live scores: one wildcard subscription (`game.*.score`), narrowed by a `gameId`
// filter, batched by the server (`batch_ms`) and conflated to the latest update per
// game (`mode: "latest"`, `key: "gameId"`). Event shape: docs/demo.md.
import { HeraldClient } from "/client/herald.js";

const PATTERN = "game.*.score";
const params = new URLSearchParams(location.search);
const batchMs = intParam("batch_ms", 1000, 0, 60000);
const wsUrls = listParam("ws");
if (!wsUrls.length) wsUrls.push(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
let followed = listParam("games"); // empty: every game
// With auth on: ?token=<JWT>. A demo shortcut only (URLs end up in logs and history);
// a real page asks its own backend (the client's `getToken` option).
const token = params.get("token") || null;

const $ = (id) => document.getElementById(id);
const board = $("board");
const games = new Map(); // gameId -> {topic, offset, renders, el}
let pending = new Map(); // gameId -> {msg, count}: what the next render shows
let renderScheduled = false;
let received = 0;
let renders = 0;
let everOpen = false;
let sub = null;

function intParam(name, fallback, min, max) {
  const n = Number.parseInt(params.get(name) ?? "", 10);
  return Number.isFinite(n) ? Math.min(max, Math.max(min, n)) : fallback;
}

function listParam(name) {
  return (params.get(name) ?? "").split(",").map((s) => s.trim()).filter(Boolean);
}

function setConnection(state) {
  const el = $("conn");
  el.dataset.state = state;
  el.textContent = state;
}

const client = new HeraldClient(wsUrls, { token, minBackoffMs: 250, maxBackoffMs: 5000 });
client.on("state", ({ state }) => {
  if (state === "open") {
    // After a reconnect the badge waits for the resubscription and the history catch-up.
    if (!everOpen) setConnection("connected");
    everOpen = true;
  } else if (state === "closed") setConnection("closed");
  else setConnection(everOpen ? "reconnecting" : "connecting");
});

function gameIdOf(msg) {
  return String(msg.attributes?.gameId ?? msg.topic.split(".")[1]);
}

function onMessage(msg) {
  received += 1;
  queue(msg);
}

function queue(msg) {
  const id = gameIdOf(msg);
  const known = games.get(id);
  if (known?.offset != null && typeof msg.offset === "number" && msg.offset <= known.offset) return;
  const prev = pending.get(id);
  // A history catch-up and live messages may interleave: keep the newest.
  if (prev && typeof prev.msg.offset === "number" && typeof msg.offset === "number" && msg.offset < prev.msg.offset) {
    prev.count += 1;
    return;
  }
  pending.set(id, { msg, count: (prev?.count ?? 0) + 1 });
  if (!renderScheduled) {
    renderScheduled = true;
    // Every message of one `msgs` frame is delivered in the same task: render once after.
    queueMicrotask(render);
  }
}

function card(id) {
  let g = games.get(id);
  if (g) return g;
  const el = document.createElement("li");
  el.className = "game";
  el.dataset.game = id;
  el.setAttribute("aria-label", `Game ${id}`);
  el.innerHTML = `
    <div class="teams">
      <span class="home"></span><span class="goals home-goals"></span>
      <span class="away"></span><span class="goals away-goals"></span>
    </div>
    <div class="meta"><span><span class="minute"></span> <span class="gid"></span></span><span class="coalesced"></span></div>`;
  el.querySelector(".gid").textContent = id;
  g = { topic: null, offset: null, renders: 0, el };
  games.set(id, g);
  insertSorted(el, id);
  $("empty").hidden = true;
  return g;
}

function insertSorted(el, id) {
  const next = [...board.children].find((c) => c.dataset.game.localeCompare(id, undefined, { numeric: true }) > 0);
  board.insertBefore(el, next ?? null);
}

function render() {
  renderScheduled = false;
  const batch = pending;
  pending = new Map();
  if (!batch.size) return;
  renders += 1;
  let updates = 0;
  for (const [id, { msg, count }] of batch) {
    const g = card(id);
    // With offsets (history on game.>), the gap between two renders is the exact
    // number of updates the server conflated; without them, what this page saw.
    const coalesced =
      g.offset != null && typeof msg.offset === "number" ? msg.offset - g.offset : count;
    updates += coalesced;
    g.topic = msg.topic;
    if (typeof msg.offset === "number") g.offset = msg.offset;
    g.renders += 1;
    const d = msg.data ?? {};
    const q = (sel) => g.el.querySelector(sel);
    q(".home").textContent = d.home ?? "Home";
    q(".away").textContent = d.away ?? "Away";
    q(".home-goals").textContent = String(d.homeScore ?? 0);
    q(".away-goals").textContent = String(d.awayScore ?? 0);
    q(".minute").textContent = d.minute != null ? `${d.minute}'` : "";
    q(".coalesced").textContent = `render ${g.renders} · ${coalesced} update${coalesced === 1 ? "" : "s"} coalesced`;
    g.el.dataset.renders = String(g.renders);
    g.el.classList.remove("flash");
    void g.el.offsetWidth; // restart the animation
    g.el.classList.add("flash");
  }
  $("received").textContent = String(received);
  $("renders").textContent = String(renders);
  $("last-render").textContent = `last render: ${updates} update${updates === 1 ? "" : "s"} in ${batch.size} game${batch.size === 1 ? "" : "s"}`;
}

// After a reconnect, a wildcard subscription cannot resume by offset (offsets are per
// topic): fetch what each shown game missed from its history instead.
async function catchUp() {
  let gap = false;
  await Promise.all(
    [...games.entries()].map(async ([id, g]) => {
      if (followed.length && !followed.includes(id)) return;
      if (g.offset == null || g.topic == null) {
        gap = true; // no offsets: this topic has no history to catch up from
        return;
      }
      try {
        const url = `/v1/topics/${encodeURIComponent(g.topic)}/history?since=${g.offset}&limit=1000`;
        const r = await fetch(url, token ? { headers: { Authorization: `Bearer ${token}` } } : {});
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        const page = await r.json();
        if (!page.recovered) gap = true;
        for (const m of page.messages ?? []) queue(m);
      } catch {
        gap = true;
      }
    }),
  );
  setConnection(gap ? "resumed with a gap" : "resumed");
}

function showFollowing() {
  $("following").textContent = followed.length ? `following ${followed.join(", ")}` : "following every game";
  $("games").value = followed.join(", ");
  const url = new URL(location.href);
  if (followed.length) url.searchParams.set("games", followed.join(","));
  else url.searchParams.delete("games");
  history.replaceState(null, "", url);
}

function subscribe() {
  if (sub) sub.unsubscribe();
  for (const [id, g] of games) {
    if (followed.length && !followed.includes(id)) {
      g.el.remove();
      games.delete(id);
    }
  }
  $("empty").hidden = games.size > 0;
  const options = { batchMs, mode: "latest", key: "gameId" };
  if (followed.length) options.filter = { gameId: followed };
  sub = client.subscribe(PATTERN, options, onMessage);
  sub.on("subscribed", (info) => {
    if (info.resubscribe) catchUp();
  });
  sub.on("error", (e) => setConnection(`error: ${e.code}`));
  showFollowing();
}

$("picker").addEventListener("submit", (ev) => {
  ev.preventDefault();
  followed = $("games").value.split(",").map((s) => s.trim()).filter(Boolean);
  subscribe();
});
$("all-games").addEventListener("click", () => {
  followed = [];
  subscribe();
});
$("batch").textContent = String(batchMs);
subscribe();
