"""The Lua scripts of the Redis queue store: every message state change is one script.

Each queue script gets the keys of ONE queue (`RedisKeys.queue`, same hash tag) and
ARGV = [wake channel, now (Unix s), now (Unix ms), ...]. A shared prelude holds
the helpers that keep the indexes consistent; see `redis_keys` for the layout.
"""

from __future__ import annotations

from fanout.queues.model import DEDUP_WINDOW_S
from fanout.redis.runner import Script, ScriptRunner

_PRELUDE = r"""
local K_META, K_BODY, K_STATE, K_READY, K_DELAYED, K_INFLIGHT, K_EXPIRY,
      K_DEDUP, K_DEDUPX, K_GROUPS, K_GMSGS, K_OUTBOX, K_MOVED, K_WAITING = unpack(KEYS)
local CHANNEL = ARGV[1]
local NOW = tonumber(ARGV[2])
local NOW_MS = tonumber(ARGV[3])
-- rank = (9 - priority) * 2^49 + seq stays an exact double for 2^49 messages
local PRIO = 562949953421312
local A

local function load_attrs()
  local raw = redis.call('HGET', K_META, 'attrs')
  if not raw then return false end
  A = cjson.decode(raw)
  if type(A.dead_letter) ~= 'table' then A.dead_letter = nil end
  if type(A.max_depth) ~= 'number' then A.max_depth = nil end
  return true
end

local function get_state(id)
  local raw = redis.call('HGET', K_STATE, id)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function put_state(id, st)
  redis.call('HSET', K_STATE, id, cjson.encode(st))
end

local function gmember(st, id)
  return st.g .. '\0' .. string.format('%016x', st.s) .. id
end

local function group_head(g)
  local r = redis.call('ZRANGEBYLEX', K_GMSGS, '[' .. g .. '\0', '(' .. g .. '\1', 'LIMIT', 0, 1)
  if #r == 0 then return nil end
  return string.sub(r[1], #g + 18)
end

-- A FIFO group is in K_GROUPS exactly when its head (oldest message) is visible.
local function refresh_group(g)
  local head = group_head(g)
  if head and not redis.call('ZSCORE', K_DELAYED, head)
      and not redis.call('ZSCORE', K_INFLIGHT, head) then
    redis.call('ZADD', K_GROUPS, get_state(head).s, g)
  else
    redis.call('ZREM', K_GROUPS, g)
  end
end

local function make_visible(id, st)
  if A.fifo then
    refresh_group(st.g)
  else
    redis.call('ZADD', K_READY, (9 - st.p) * PRIO + st.s, id)
  end
end

local function add_message(id, payload, st, delay)
  redis.call('HSET', K_BODY, id, payload)
  put_state(id, st)
  redis.call('ZADD', K_EXPIRY, NOW + A.retention, id)
  if A.fifo then redis.call('ZADD', K_GMSGS, 0, gmember(st, id)) end
  if delay > 0 then
    redis.call('ZADD', K_DELAYED, NOW + delay, id)
    if A.fifo then refresh_group(st.g) end
  else
    make_visible(id, st)
  end
end

local function remove_message(id, st)
  redis.call('HDEL', K_BODY, id)
  redis.call('HDEL', K_STATE, id)
  redis.call('ZREM', K_READY, id)
  redis.call('ZREM', K_DELAYED, id)
  redis.call('ZREM', K_INFLIGHT, id)
  redis.call('ZREM', K_EXPIRY, id)
  if st.g then
    redis.call('ZREM', K_GMSGS, gmember(st, id))
    refresh_group(st.g)
  end
end

local function sweep(limit)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_EXPIRY, '-inf', NOW, 'LIMIT', 0, limit)) do
    local st = get_state(id)
    if st then remove_message(id, st) else redis.call('ZREM', K_EXPIRY, id) end
  end
  for _, k in ipairs(redis.call('ZRANGEBYSCORE', K_DEDUPX, '-inf', NOW, 'LIMIT', 0, limit)) do
    redis.call('HDEL', K_DEDUP, k)
    redis.call('ZREM', K_DEDUPX, k)
  end
end

-- Delayed messages that fell due and in-flight ones whose visibility ran out.
local function promote(limit)
  for _, z in ipairs({K_DELAYED, K_INFLIGHT}) do
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', NOW, 'LIMIT', 0, limit)) do
      redis.call('ZREM', z, id)
      local st = get_state(id)
      if st then make_visible(id, st) end
    end
  end
end

local function wake()
  if redis.call('EXISTS', K_WAITING) == 1 then redis.call('PUBLISH', CHANNEL, '1') end
end

local function next_due()
  local best
  for _, z in ipairs({K_DELAYED, K_INFLIGHT}) do
    local r = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
    if #r > 0 and (not best or tonumber(r[2]) < best) then best = tonumber(r[2]) end
  end
  if best then return tostring(best) end
  return ''
end

local function outbox_record(kind, dest, id, st, src)
  return cjson.encode({kind = kind, dest = dest, id = id, payload = redis.call('HGET', K_BODY, id),
    s = st.s, p = st.p, g = st.g, t = st.t, rc = st.rc, f = st.f, src = src, keep_src = st.src})
end
"""

# ARGV[4..]: 7 per entry: id, payload, priority, delay ('' = queue default), group,
# dedup id, content hash. Returns a flat list of (kind, value) pairs per entry.
SEND = r"""
if not load_attrs() then return {'notfound'} end
sweep(100)
local out = {}
local depth = redis.call('HLEN', K_BODY)
local sent = 0
for i = 4, #ARGV, 7 do
  local id, payload, prio, delay = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local group, dedup, chash = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local key
  if dedup ~= '' then key = dedup elseif A.content_dedup and chash ~= '' then key = chash end
  local first
  if key then
    local until_ = redis.call('ZSCORE', K_DEDUPX, key)
    if until_ and tonumber(until_) > NOW then first = redis.call('HGET', K_DEDUP, key) end
  end
  if first then
    out[#out + 1] = 'id'; out[#out + 1] = first
  elseif #payload > A.max_message_bytes then
    out[#out + 1] = 'payload_too_large'; out[#out + 1] = tostring(#payload)
  elseif A.max_depth and depth >= A.max_depth then
    out[#out + 1] = 'queue_full'; out[#out + 1] = ''
  else
    local st = {s = redis.call('HINCRBY', K_META, 'seq', 1), p = prio, rc = 0, r = '', t = NOW_MS,
                f = 0}
    if group ~= '' then st.g = group end
    local d = A.delay
    if delay ~= '' then d = tonumber(delay) end
    add_message(id, payload, st, d)
    if key then
      redis.call('HSET', K_DEDUP, key, id)
      redis.call('ZADD', K_DEDUPX, NOW + @DEDUP_WINDOW@, key)
    end
    depth = depth + 1
    sent = sent + 1
    out[#out + 1] = 'id'; out[#out + 1] = id
  end
end
if sent > 0 then
  redis.call('HINCRBY', K_META, 'sent_total', sent)
  wake()
end
return out
""".replace("@DEDUP_WINDOW@", str(DEDUP_WINDOW_S))

# ARGV[4..]: queue name, max, visibility timeout ('' = default), receipt base,
# long-poll ms (0 = not waiting). Returns {next due, moved to outbox, {id, receipt
# token, payload, receive count, sent ms, first received ms, ...}}.
RECEIVE = r"""
if not load_attrs() then return {'notfound'} end
sweep(200)
promote(1000)
local queue, max, base = ARGV[4], tonumber(ARGV[5]), ARGV[7]
local vt = A.visibility_timeout
if ARGV[6] ~= '' then vt = tonumber(ARGV[6]) end
local dl = A.dead_letter
local out = {}
local n, moved = 0, 0
while n < max do
  local r, id
  if A.fifo then
    r = redis.call('ZPOPMIN', K_GROUPS)
    if #r == 0 then break end
    id = group_head(r[1])
  else
    r = redis.call('ZPOPMIN', K_READY)
    if #r == 0 then break end
    id = r[1]
  end
  local st = id and get_state(id)
  if st then
    local rc = st.rc + 1
    if dl and rc > dl.max_receive_count and not st.nodlq then
      -- Counted against the receive that would exceed the limit: the message leaves
      -- for the dead-letter queue (via the outbox) instead of being delivered.
      moved = moved + 1
      redis.call('HSET', K_OUTBOX, base .. 'm' .. moved,
                 outbox_record('dlq', dl.queue, id, st, queue))
      remove_message(id, st)
    else
      n = n + 1
      st.rc = rc
      st.r = base .. string.format('%x', n)
      if st.f == 0 then st.f = NOW_MS end
      put_state(id, st)
      redis.call('ZADD', K_INFLIGHT, NOW + vt, id)
      for _, v in ipairs({id, st.r, redis.call('HGET', K_BODY, id), rc, st.t, st.f}) do
        out[#out + 1] = v
      end
    end
  end
end
if n > 0 then redis.call('HINCRBY', K_META, 'received_total', n) end
if moved > 0 then redis.call('HINCRBY', K_META, 'dead_lettered_total', moved) end
local wait_ms = tonumber(ARGV[8])
if n == 0 and wait_ms > 0 and redis.call('PTTL', K_WAITING) < wait_ms then
  redis.call('SET', K_WAITING, '1', 'PX', wait_ms)
end
return {next_due(), moved, out}
"""

# ARGV[4..]: id, token pairs. Returns 1/0 per pair.
ACK = r"""
if not load_attrs() then return {'notfound'} end
local out, n = {}, 0
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local st = get_state(id)
  if st and st.r ~= '' and st.r == token then
    remove_message(id, st)
    n = n + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if n > 0 then
  redis.call('HINCRBY', K_META, 'deleted_total', n)
  if A.fifo then wake() end
end
return out
"""

# ARGV[4..]: id, token, timeout, release ('1': give back, visible after timeout).
CHANGE_VISIBILITY = r"""
if not load_attrs() then return 'notfound' end
promote(1000)
local id, token, t = ARGV[4], ARGV[5], tonumber(ARGV[6])
local st = get_state(id)
if not st or st.r == '' or st.r ~= token or not redis.call('ZSCORE', K_INFLIGHT, id) then
  return 'invalid'
end
if ARGV[7] == '1' then
  st.r = ''
  put_state(id, st)
  redis.call('ZREM', K_INFLIGHT, id)
  if t > 0 then
    redis.call('ZADD', K_DELAYED, NOW + t, id)
  else
    make_visible(id, st)
    wake()
  end
else
  redis.call('ZADD', K_INFLIGHT, NOW + t, id)
end
return 'ok'
"""

# Returns false for a missing queue, else {attrs, visible, in_flight, delayed,
# oldest sent ms or '', seq-less counters...}.
STATS = r"""
if not load_attrs() then return false end
sweep(1000)
promote(1000)
local total = redis.call('HLEN', K_BODY)
local inflight = redis.call('ZCARD', K_INFLIGHT)
local delayed = redis.call('ZCARD', K_DELAYED)
local oldest = ''
local first = redis.call('ZRANGE', K_EXPIRY, 0, 0)
if #first > 0 then
  local st = get_state(first[1])
  if st then oldest = tostring(st.t) end
end
local m = redis.call('HMGET', K_META, 'attrs', 'sent_total', 'received_total', 'deleted_total',
                     'dead_lettered_total')
return {m[1], total - inflight - delayed, inflight, delayed, oldest,
        m[2] or '0', m[3] or '0', m[4] or '0', m[5] or '0'}
"""

PURGE = r"""
if not load_attrs() then return -1 end
local n = redis.call('HLEN', K_BODY)
redis.call('DEL', K_BODY, K_STATE, K_READY, K_DELAYED, K_INFLIGHT, K_EXPIRY, K_GROUPS, K_GMSGS)
return n
"""

DELETE = r"""
if not load_attrs() then return 0 end
redis.call('DEL', unpack(KEYS))
return 1
"""

# Import a message leaving another queue's outbox (ARGV[4..]: move id, record JSON,
# kind 'dlq' | 'redrive'), or put one back from this queue's own outbox when its
# destination is gone (kind 'restore', record ''). Returns ok | dup | gone | notfound.
IMPORT = r"""
if not load_attrs() then return 'notfound' end
local move_id, kind = ARGV[4], ARGV[6]
local rec, st
if kind == 'restore' then
  local raw = redis.call('HGET', K_OUTBOX, move_id)
  if not raw then return 'gone' end
  redis.call('HDEL', K_OUTBOX, move_id)
  rec = cjson.decode(raw)
  -- Back where it was, in its old place; a message whose dead-letter queue is gone
  -- is delivered normally from now on instead of bouncing forever.
  st = {s = rec.s, p = rec.p, g = rec.g, t = rec.t, rc = rec.rc, f = rec.f, r = '',
        src = rec.keep_src}
  if rec.kind == 'dlq' then st.nodlq = 1 end
else
  if redis.call('ZSCORE', K_MOVED, move_id) then return 'dup' end
  redis.call('ZADD', K_MOVED, NOW, move_id)
  redis.call('ZREMRANGEBYSCORE', K_MOVED, '-inf', NOW - 86400)
  rec = cjson.decode(ARGV[5])
  st = {s = redis.call('HINCRBY', K_META, 'seq', 1), p = rec.p, g = rec.g, t = rec.t, rc = 0,
        f = 0, r = '', src = rec.src}
end
if redis.call('HEXISTS', K_STATE, rec.id) == 1 then return 'dup' end
if A.fifo and not st.g then st.g = '_' end
if not A.fifo then st.g = nil end
add_message(rec.id, rec.payload, st, 0)
wake()
return 'ok'
"""

# Move dead-lettered messages (those with a source) that are not in flight into
# this queue's outbox, one page of the expiry index at a time. ARGV[4..]: move id
# base, page size, cursor. Returns {scanned, next cursor, moved}.
REDRIVE = r"""
if not load_attrs() then return {-1, 0, 0} end
promote(1000)
local base, limit, cursor = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local ids = redis.call('ZRANGE', K_EXPIRY, cursor, cursor + limit - 1)
local moved, skipped = 0, 0
for _, id in ipairs(ids) do
  local st = get_state(id)
  if st and st.src and not redis.call('ZSCORE', K_INFLIGHT, id) then
    moved = moved + 1
    redis.call('HSET', K_OUTBOX, base .. 'r' .. moved,
               outbox_record('redrive', st.src, id, st, nil))
    remove_message(id, st)
  else
    skipped = skipped + 1
  end
end
return {#ids, cursor + skipped, moved}
"""

SCRIPTS: dict[str, Script] = {
    name: Script.of(_PRELUDE + body)
    for name, body in {
        "send": SEND,
        "receive": RECEIVE,
        "ack": ACK,
        "change_visibility": CHANGE_VISIBILITY,
        "stats": STATS,
        "purge": PURGE,
        "delete": DELETE,
        "import": IMPORT,
        "redrive": REDRIVE,
    }.items()
}

# The subscription registry: KEYS = [subs, subs version] (one slot on a cluster).
# Reads both at once, so the version matches the subscriptions it came with.
SUBS_LOAD = r"""
return {redis.call('GET', KEYS[2]) or false, redis.call('HGETALL', KEYS[1])}
"""

# ARGV = [changed channel, 'set' | 'del', subscription id, JSON]: change one entry,
# bump the version and announce it. Returns what HSET / HDEL returned.
SUBS_CHANGE = r"""
local r
if ARGV[2] == 'set' then
  r = redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
else
  r = redis.call('HDEL', KEYS[1], ARGV[3])
end
redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[1], '1')
return r
"""

GLOBAL_SCRIPTS: dict[str, Script] = {
    "subs_load": Script.of(SUBS_LOAD),
    "subs_change": Script.of(SUBS_CHANGE),
}
RUNNER = ScriptRunner([*SCRIPTS.values(), *GLOBAL_SCRIPTS.values()])
