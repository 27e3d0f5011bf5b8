"""The Lua run inside Redis for RedisBudgets: every decision over a request's budgets in one script.

A counter is a hash (`seeded`: what the ledger held when it was made, `spent`: charges settled since,
`reserved`: the sum of its live holds) and a sorted set of its holds, "<hold id>:<amount>", scored by when
each expires (ms of Redis's `TIME`, so every replica shares one clock). A hold past its expiry is reaped
(its amount leaves `reserved`) by the next script that reads the counter; a settlement releases a hold only
if it was still there, so an expired hold is never released twice. A counter without `seeded` does not
exist: scripts that read one say so, and the caller seeds it from the ledger (SEED) and asks again.

Lua numbers are doubles, exact for integers below 2**53 (the caller checks); a number handed to
redis.call is written with '%.0f', never Lua's own formatting, which may turn to an exponent.
"""

from __future__ import annotations

__all__ = ["RESERVE", "SEED", "SETTLE", "STATUS"]

_COUNTERS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function int(n)
  return string.format('%.0f', n)
end

local function amount_of(member)
  return tonumber(string.match(member, ':(%d+)$')) or 0
end

-- the holds past their expiry leave the counter
local function reap(hash, holds)
  local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', int(now))
  if #expired == 0 then return end
  local total = 0
  for _, member in ipairs(expired) do total = total + amount_of(member) end
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', int(now))
  redis.call('HINCRBY', hash, 'reserved', int(-total))
end

-- KEYS come in pairs, a counter's hash then its holds: the indexes (from 1) of the pairs not seeded yet
local function missing()
  local absent = {}
  for i = 1, #KEYS / 2 do
    if redis.call('HEXISTS', KEYS[2 * i - 1], 'seeded') == 0 then absent[#absent + 1] = i end
  end
  return absent
end

-- {seeded + spent, reserved} of a counter, after reaping
local function level(hash, holds)
  reap(hash, holds)
  local values = redis.call('HMGET', hash, 'seeded', 'spent', 'reserved')
  return (tonumber(values[1]) or 0) + (tonumber(values[2]) or 0), tonumber(values[3]) or 0
end
"""

RESERVE = (
    _COUNTERS
    + """
-- KEYS: per budget, its counter's hash and holds. ARGV: amount, hold member, hold ttl (ms), then per
-- budget its limit and when its counter expires (Unix ms; 0: never).
-- Returns {0}: reserved in every counter; {1, i, ...}: budgets i, ... have no counter yet, nothing done;
-- {2, i, remaining}: budget i (the first without room) has only `remaining` left, nothing reserved.
local absent = missing()
if #absent > 0 then return {1, unpack(absent)} end
local amount, member, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
for i = 1, #KEYS / 2 do
  local spent, reserved = level(KEYS[2 * i - 1], KEYS[2 * i])
  local limit = tonumber(ARGV[2 + 2 * i])
  if spent + reserved + amount > limit then
    return {2, i, int(math.max(0, limit - spent - reserved))}
  end
end
local done = {}
for i = 1, #KEYS / 2 do
  local hash, holds, expires = KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[3 + 2 * i])
  if not done[hash] then  -- two budgets of one counter hold once
    done[hash] = true
    redis.call('HINCRBY', hash, 'reserved', int(amount))
    redis.call('ZADD', holds, int(now + ttl), member)
    if expires > 0 then
      redis.call('PEXPIREAT', hash, int(expires))
      redis.call('PEXPIREAT', holds, int(expires))
    end
  end
end
return {0}
"""
)

STATUS = (
    _COUNTERS
    + """
-- KEYS: per budget, its counter's hash and holds.
-- Returns {0, spent, reserved, ...} (spent: seeded + spent), a pair per budget; {1, i, ...} as RESERVE.
local absent = missing()
if #absent > 0 then return {1, unpack(absent)} end
local levels = {0}
for i = 1, #KEYS / 2 do
  local spent, reserved = level(KEYS[2 * i - 1], KEYS[2 * i])
  levels[#levels + 1] = int(spent)
  levels[#levels + 1] = int(reserved)
end
return levels
"""
)

SEED = """
-- KEYS: a counter's hash and holds. ARGV: what the ledger holds of it, when it expires (Unix ms; 0: never).
-- Makes the counter unless another caller did first (whose seed stands). Returns 1 if made here.
if redis.call('HSETNX', KEYS[1], 'seeded', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'spent', '0', 'reserved', '0')
redis.call('DEL', KEYS[2])  -- holds of a counter that vanished count in no `reserved` now
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return 1
"""

SETTLE = (
    _COUNTERS
    + """
-- One tenant's settlements of one batch. KEYS: the marks of the process settling (a hash: counter -> the
-- number of the last batch of its settled here), then each counter's hash and holds. ARGV: the batch's
-- number, how long marks are kept (ms), then for each counter: the charges to add to `spent`, how many
-- holds it releases, and their members.
-- A batch is sent again when its answer was lost (Redis hung or unreachable), and the first copy may have
-- run after all: a counter whose mark is not below the batch's number ran it already, and is left alone.
-- Only holds still there are released (a reaped one left `reserved` already), and nothing is added to a
-- counter not seeded yet: its seed will read these charges from the ledger. Returns how many counters ran.
local batch = tonumber(ARGV[1])
local marks = KEYS[1]
local at = 3
local ran = 0
for k = 2, #KEYS, 2 do
  local hash, holds = KEYS[k], KEYS[k + 1]
  local charged = tonumber(ARGV[at])
  local first, last = at + 2, at + 1 + tonumber(ARGV[at + 1])
  at = last + 1
  if batch > (tonumber(redis.call('HGET', marks, hash)) or 0) then
    ran = ran + 1
    redis.call('HSET', marks, hash, ARGV[1])
    local seeded = redis.call('HEXISTS', hash, 'seeded') == 1
    local released = 0
    for i = first, last do
      if redis.call('ZREM', holds, ARGV[i]) == 1 then released = released + amount_of(ARGV[i]) end
    end
    if seeded and released > 0 then redis.call('HINCRBY', hash, 'reserved', int(-released)) end
    if seeded and charged ~= 0 then redis.call('HINCRBY', hash, 'spent', int(charged)) end
  end
end
if ran > 0 then redis.call('PEXPIRE', marks, ARGV[2]) end
return ran
"""
)
