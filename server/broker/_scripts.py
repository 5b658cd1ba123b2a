"""The broker's Lua scripts: each is one atomic step on the Redis server.

Times come from the Redis server's own clock (``TIME``), never from a node's:
leases written by one machine are judged by another, and only Redis's clock
is common to both. Leases are sorted sets scored by their expiry in
milliseconds; a member whose score is not above "now" has expired.
"""

from __future__ import annotations

#: Shared by every script: the server's clock in ms, and a set's key expiry
#: moved to its latest member's (so a set nobody renews disappears by itself).
_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function expire_with_members(key)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', key, top[2]) end
end
"""

#: KEYS: node lease, nodes set. ARGV: node id, lease ms. Writes both the lease
#: key (with its TTL) and the node's score in the set, in one step.
RENEW_NODE = (
    _PRELUDE
    + """
local lease = tonumber(ARGV[2])
local now = now_ms()
redis.call('SET', KEYS[1], ARGV[1], 'PX', lease)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
expire_with_members(KEYS[2])
return now + lease
"""
)

#: KEYS: node lease, nodes set. ARGV: node id. A clean leave.
LEAVE_NODE = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

#: KEYS: a lease set. Returns its members whose lease has not expired.
LIVE_MEMBERS = (
    _PRELUDE
    + """
return redis.call('ZRANGE', KEYS[1], '(' .. now_ms(), '+inf', 'BYSCORE')
"""
)

#: KEYS: a user's connection set. ARGV: connection id, limit (<= 0: none),
#: lease ms. Drops expired leases, then adds this one if the user holds
#: fewer than ``limit``. Holding it already renews it. Returns 1 or 0.
ACQUIRE_CONNECTION = (
    _PRELUDE
    + """
local now = now_ms()
local expiry = now + tonumber(ARGV[3])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
end
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
expire_with_members(KEYS[1])
return 1
"""
)

#: KEYS: lease sets. ARGV: one member per key. Removes each member from its
#: set (a set goes with its last member). Returns how many were removed.
RELEASE = (
    _PRELUDE
    + """
local removed = 0
for i, key in ipairs(KEYS) do
  removed = removed + redis.call('ZREM', key, ARGV[i])
  expire_with_members(key)
end
return removed
"""
)

#: KEYS: lease sets, one per member. ARGV: lease ms, mode, then one member per
#: key. Mode ``keep`` renews only members still held (a connection lease that
#: lapsed may have been given to someone else: it is lost, not taken back);
#: mode ``add`` (interest) writes the member whatever happened. Returns the
#: 1-based positions of the members that were lost.
RENEW_MEMBERS = (
    _PRELUDE
    + """
local now = now_ms()
local expiry = now + tonumber(ARGV[1])
local keep = ARGV[2] == 'keep'
local lost = {}
for i, key in ipairs(KEYS) do
  local member = ARGV[i + 2]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if keep and not redis.call('ZSCORE', key, member) then
    lost[#lost + 1] = i
  else
    redis.call('ZADD', key, expiry, member)
    expire_with_members(key)
  end
end
return lost
"""
)

#: KEYS: target's lease, target's inbox. ARGV: command (JSON), maxlen, inbox
#: TTL ms. Appends only if the target is alive; returns 1 if appended, else 0.
SEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'c', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

#: KEYS: (stream, interest set) per stream. ARGV: gated (1/0), maxlen, TTL s,
#: then per stream: its entry count n and n pairs (seq, payload). A gated
#: stream is appended to only while its interest set has a live member, in
#: the same step as the check: after ``follow`` returns, every later batch
#: of that thread is published. Ids are ``0-<seq>``: an entry whose seq is
#: not above the stream's last (a retried batch) is skipped, not doubled.
#: Returns {appended, skipped}.
PUBLISH = (
    _PRELUDE
    + """
local gated = ARGV[1] == '1'
local maxlen = ARGV[2]
local ttl = ARGV[3]
local now = nil
local a = 4
local appended = 0
local skipped = 0
for i = 1, #KEYS, 2 do
  local n = tonumber(ARGV[a])
  a = a + 1
  local open = true
  if gated then
    now = now or now_ms()
    open = redis.call('ZCOUNT', KEYS[i + 1], '(' .. now, '+inf') > 0
  end
  if open then
    local added = 0
    for j = 1, n do
      local id = '0-' .. ARGV[a]
      local r = redis.pcall('XADD', KEYS[i], 'MAXLEN', '~', maxlen, id, 'p', ARGV[a + 1])
      if type(r) == 'table' and r.err then skipped = skipped + 1 else added = added + 1 end
      a = a + 2
    end
    if added > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
    appended = appended + added
  else
    skipped = skipped + n
    a = a + 2 * n
  end
end
return {appended, skipped}
"""
)

#: KEYS: claim key. ARGV: owner, ms. Returns 1 for the one caller that got it.
CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
