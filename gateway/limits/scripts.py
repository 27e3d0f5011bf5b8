"""The Lua run inside Redis: the GCRA of gcra.py, on Redis's clock, atomically.

A bucket is one string key, "<level>:<ms>" (see gcra.py), expiring when it would have drained, so idle
keys vanish on their own. Time is `TIME` on the Redis server, so every gateway replica shares one clock.
Lua numbers are doubles; every quantity here is an integer below 2**53, so the arithmetic is exact.
"""

from __future__ import annotations

__all__ = ["ADMIT", "SETTLE"]

_BUCKETS = """
local SCALE = 60000
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- ceil(a / b) for positive integers, exact even where the double quotient rounds
local function ceil_div(a, b)
  local q = math.floor(a / b)
  if q * b < a then q = q + 1 end
  return q
end

local function level(key, limit)
  local value = redis.call('GET', key)
  if not value then return 0 end
  local fill, at = string.match(value, '^(%d+):(%d+)$')
  if not fill then return 0 end  -- not ours to read: start afresh rather than fail every request
  -- a clock that went backwards (a failover to another server) drains nothing
  local elapsed = math.max(0, now - tonumber(at))
  return math.max(0, tonumber(fill) - elapsed * limit)
end

local function store(key, fill, limit)
  if fill <= 0 then
    redis.call('DEL', key)  -- full again: nothing worth keeping
  else
    redis.call('SET', key, string.format('%.0f:%.0f', fill, now), 'PX', ceil_div(fill, limit))
  end
end
"""

ADMIT = (
    _BUCKETS
    + """
-- KEYS: the requests bucket, the tokens bucket. ARGV: rpm, tpm (0: no such limit), the token cost.
-- Returns {wait_ms, requests level, tokens level}. wait_ms 0: admitted, both consumed, levels after;
-- otherwise refused, nothing consumed, levels as they stand.
local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local requests, tokens, wait = 0, 0, 0
if rpm > 0 then
  requests = level(KEYS[1], rpm)
  wait = math.max(wait, ceil_div(math.max(0, requests + SCALE - rpm * SCALE), rpm))
end
if tpm > 0 then
  tokens = level(KEYS[2], tpm)
  wait = math.max(wait, ceil_div(math.max(0, tokens + cost * SCALE - tpm * SCALE), tpm))
end
if wait == 0 then
  if rpm > 0 then
    requests = requests + SCALE
    store(KEYS[1], requests, rpm)
  end
  if tpm > 0 then
    tokens = tokens + cost * SCALE
    store(KEYS[2], tokens, tpm)
  end
end
return {wait, requests, tokens}
"""
)

SETTLE = (
    _BUCKETS
    + """
-- KEYS: the tokens bucket. ARGV: tpm, the tokens to charge (negative: to refund).
-- Clamped to the bucket, like gcra.settled().
local tpm, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local fill = math.min(tpm * SCALE, math.max(0, level(KEYS[1], tpm) + delta * SCALE))
store(KEYS[1], fill, tpm)
return fill
"""
)
