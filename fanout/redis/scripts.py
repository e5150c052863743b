"""The backplane's Lua scripts: one atomic step per published message, one per read.

Both scripts touch only keys tagged `{topic}` (one cluster slot). The publish
script does, atomically: idempotency (the first result is kept for 300 s and
returned to repeats), offset assignment and history append (stream entry id
`<offset>-0`, exact MAXLEN, TTL trimming by entry ts), and PUBLISH of the final
envelope. The offset is spliced into the envelope exactly like
`Message.with_offset` does, so the envelope is still encoded only once.

Epochs (SPEC §4): drawn when a topic's state is created, and drawn again when the
history stream vanished while it should still hold entries (eviction, a restart
without persistence that kept the meta hash, …), so resuming clients are told
`recovered: false` instead of getting a silent gap. A stream that expired because
every entry outlived the rule's ttl is not a loss and keeps the epoch.
"""

from __future__ import annotations

from fanout.redis.runner import Script, ScriptRunner

# Shared by both scripts. Numbers arrive as strings in ARGV.
_PRELUDE = r"""
local function ensure_epoch(m, h, ttl, now, new_epoch, idle)
  local meta = redis.call('HMGET', m, 'e', 'n', 't')
  local epoch = meta[1]
  if not epoch then
    redis.call('DEL', h)
    redis.call('HSET', m, 'e', new_epoch, 'n', 0, 't', 0)
    redis.call('PEXPIRE', m, idle)
    return new_epoch, 0
  end
  local n = tonumber(meta[2]) or 0
  if n > 0 and redis.call('EXISTS', h) == 0 then
    local t = tonumber(meta[3]) or 0
    if not (ttl > 0 and now - t >= ttl) then
      redis.call('HSET', m, 'e', new_epoch)
      epoch = new_epoch
    end
  end
  return epoch, n
end

local function trim_ttl(h, cutoff)
  while true do
    local rows = redis.call('XRANGE', h, '-', '+', 'COUNT', 64)
    if #rows == 0 then return end
    for i = 1, #rows do
      if tonumber(rows[i][2][2]) >= cutoff then
        if i > 1 then redis.call('XTRIM', h, 'MINID', rows[i][1]) end
        return
      end
    end
    local last = tonumber(string.match(rows[#rows][1], '^(%d+)'))
    redis.call('XTRIM', h, 'MINID', string.format('%d-0', last + 1))
  end
end
"""

# KEYS: meta, history, idempotency key
# ARGV: 1 envelope, 2 keeps history (1/0), 3 idempotent (1/0), 4 size, 5 ttl ms (0: none),
#       6 message ts ms, 7 now ms, 8 epoch to draw, 9 idle expiry ms, 10 idempotency ms,
#       11 publish command, 12 return the envelope (1/0), 13.. channels
# Returns {duplicate (0/1), offset or '', [envelope]}.
PUBLISH_LUA = (
    _PRELUDE
    + r"""
local env = ARGV[1]
if ARGV[3] == '1' then
  local first = redis.call('GET', KEYS[3])
  if first then return {1, first} end
end
local offset = ''
if ARGV[2] == '1' then
  local ttl = tonumber(ARGV[5])
  local now = tonumber(ARGV[7])
  local idle = tonumber(ARGV[9])
  ensure_epoch(KEYS[1], KEYS[2], ttl, now, ARGV[8], idle)
  local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
  redis.call('HSET', KEYS[1], 't', ARGV[6])
  env = string.sub(env, 1, -2) .. string.format(',"offset":%d}', n)
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], string.format('%d-0', n),
             't', ARGV[6], 'e', env)
  if ttl > 0 then
    trim_ttl(KEYS[2], now - ttl)
    redis.call('PEXPIRE', KEYS[2], ttl + 1000)
  else
    redis.call('PEXPIRE', KEYS[2], idle)
  end
  redis.call('PEXPIRE', KEYS[1], idle + ttl)
  offset = n
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[3], offset, 'PX', ARGV[10])
end
local cmd = ARGV[11]
for i = 13, #ARGV do
  redis.call(cmd, ARGV[i], env)
end
if ARGV[12] == '1' then return {0, offset, env} end
return {0, offset}
"""
)

# KEYS: meta, history
# ARGV: 1 since (-1: none), 2 limit, 3 ttl ms, 4 now ms, 5 epoch to draw, 6 idle expiry ms
# Returns {epoch, latest offset, first kept offset, envelope...}.
HISTORY_LUA = (
    _PRELUDE
    + r"""
local since = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local epoch, n = ensure_epoch(KEYS[1], KEYS[2], ttl, tonumber(ARGV[4]), ARGV[5],
                              tonumber(ARGV[6]))
if ttl > 0 then trim_ttl(KEYS[2], tonumber(ARGV[4]) - ttl) end
local first = n + 1
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if head[1] then first = tonumber(string.match(head[1][1], '^(%d+)')) end
local out = {epoch, n, first}
if limit > 0 then
  if since < 0 then
    local rows = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
    for i = #rows, 1, -1 do out[#out + 1] = rows[i][2][4] end
  else
    local rows = redis.call('XRANGE', KEYS[2], string.format('%d-0', since + 1), '+',
                            'COUNT', limit)
    for i = 1, #rows do out[#out + 1] = rows[i][2][4] end
  end
end
return out
"""
)


PUBLISH = Script.of(PUBLISH_LUA)
HISTORY = Script.of(HISTORY_LUA)
RUNNER = ScriptRunner((PUBLISH, HISTORY))
