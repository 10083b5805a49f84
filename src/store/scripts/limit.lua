-- Decides every rate-limit rule of one request atomically, in one round trip.
--
-- KEYS[i]   counter key of rule i (all keys of one call share a hash slot: `rl:{<route>}:…`);
--           keys within one call are expected to be distinct
-- ARGV[1]   n, the number of rules (= #KEYS)
-- ARGV[2]   nonce: a string unique per call, so sliding-log members never collide
-- ARGV[3 + 6(i-1) … 8 + 6(i-1)], for rule i:
--           algorithm (1 = sliding_window, 2 = sliding_log), limit (>= 1), window_ms (>= 1),
--           cost (>= 1), shadow (0/1), count_denied (0/1)
-- Returns   a flat array of integers:
--           {admitted (0/1), then per rule: allowed (0/1), remaining, reset_ms, retry_after_ms}
--           or an error reply when the arguments do not match this layout.
--
-- Semantics (src/store/limits/mod.rs; src/store/limits/local.rs implements the same math and
-- must agree exactly): pass 1 checks every rule against the state at `now`; the request is
-- admitted iff every non-shadow rule allows it. Pass 2 counts the cost on every rule when
-- admitted (shadow rules included), and only on rules with count_denied when denied. A rule
-- that is not counted is not written: no key is created, none is left without a TTL.
-- Time is Redis' TIME (ms), so every gateway shares one clock.
--
-- Per rule outcome, computed from the state after this call's counting:
--   allowed         usage + cost <= limit
--   remaining       floor(limit - usage_after) when the rule allows (usage_after includes the
--                   cost when it was counted), 0 when the rule denies
--   reset_ms        ms until the counter is back to zero if nothing more is counted
--   retry_after_ms  0 when allowed; else the least t >= 0 such that a request of the same cost
--                   is allowed at now + t if nothing more is counted; window_ms when cost > limit
--                   (such a request can never be allowed; window_ms is a sane back-off)
--
-- sliding_window: a HASH {w = window index, c = current count, p = previous count}; index =
-- floor(now / window). Usage = p * (window - elapsed) / window + c, computed scaled by window so
-- all arithmetic is on integers (exact while limit * window and counts * window stay below
-- 2^53). Written keys expire 2 windows after the first count of a window, by when both counts
-- are zero anyway.
-- Error bound: within each aligned window at most `limit` units are admitted, but the estimate
-- assumes the previous window's traffic was uniform across it. Bursty traffic at a window edge
-- can therefore admit up to limit + p * fraction_elapsed (< 2 * limit in the worst case) in an
-- arbitrary interval of one window length. Use sliding_log where a hard bound is required.
--
-- sliding_log: a ZSET with one member per counted unit, score = ms it was counted; a unit
-- counts while score > now - window, i.e. it expires at score + window. Exact. After counting,
-- the oldest members beyond a cap are removed: `limit` for a count_denied rule, LOG_CAP (the
-- largest limit the config allows) or `limit` if larger for others (only a shadow rule can
-- grow past its limit, by counting requests it would deny). With any cap >= limit this changes
-- no decision or outcome (the units that count at any later time are the newest ones, and
-- `limit` of them deny already); it stops hammering from growing the set without bound.
-- Written keys expire after one window, when their newest entry expires.

if redis.replicate_commands then
  -- Redis < 5 needs effects replication for a script that reads TIME before writing; a no-op
  -- since 5.0.
  redis.replicate_commands()
end

local SLIDING_WINDOW, SLIDING_LOG = 1, 2
-- ZADD arguments per call, so unpack never runs out of Lua stack for large costs.
local ZADD_BATCH = 256
-- Most members a log that is not count_denied keeps (the config's largest sliding_log limit).
local LOG_CAP = 10000

-- floor(a / b) for non-negative integers below 2^53: a / b on doubles may round up to the
-- next integer, so correct by one either way.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

-- Integers as decimal strings for redis.call: Redis' own number formatting varies by version
-- (%.17g, or shortest form that may use an exponent), and PEXPIRE wants plain digits.
local function int(x)
  return string.format('%d', x)
end

local function ceil_div(a, b)
  return idiv(a + b - 1, b)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + idiv(tonumber(t[2]), 1000)
end

local function whole(s, min)
  local x = tonumber(s)
  if x == nil or x ~= math.floor(x) or x < min then
    return nil
  end
  return x
end

local function flag(s)
  if s == '1' then return true end
  if s == '0' then return false end
  return nil
end

-- The rules of this call, or nil and a message.
local function parse_rules()
  local n = whole(ARGV[1], 0)
  if n == nil or n ~= #KEYS or #ARGV ~= 2 + 6 * n then
    return nil, 'limit.lua: expected n keys and 2 + 6n arguments'
  end
  local rules = {}
  for i = 1, n do
    local b = 2 + 6 * (i - 1)
    local r = {
      key = KEYS[i],
      alg = whole(ARGV[b + 1], 1),
      limit = whole(ARGV[b + 2], 1),
      window = whole(ARGV[b + 3], 1),
      cost = whole(ARGV[b + 4], 1),
      shadow = flag(ARGV[b + 5]),
      count_denied = flag(ARGV[b + 6]),
    }
    if r.alg == nil or r.alg > SLIDING_LOG or r.limit == nil or r.window == nil
        or r.cost == nil or r.shadow == nil or r.count_denied == nil then
      return nil, 'limit.lua: bad arguments for rule ' .. i
    end
    rules[i] = r
  end
  return rules
end

-- === sliding_window ===

-- The counter at `now`, rolled over to the current window (not written back).
local function window_view(r, now)
  local idx = idiv(now, r.window)
  local f = redis.call('HMGET', r.key, 'w', 'c', 'p')
  local w, cur, prev = tonumber(f[1]), tonumber(f[2]) or 0, tonumber(f[3]) or 0
  local first_in_window = w ~= idx
  if first_in_window then
    if w ~= nil and w + 1 == idx then
      prev, cur = cur, 0
    else
      prev, cur = 0, 0
    end
  end
  return { idx = idx, elapsed = now - idx * r.window, cur = cur, prev = prev,
           first_in_window = first_in_window }
end

-- Usage scaled by the window: prev * (window - elapsed) + cur * window.
local function window_usage(r, v)
  return v.prev * (r.window - v.elapsed) + v.cur * r.window
end

local function window_fits(r, v)
  return window_usage(r, v) + r.cost * r.window <= r.limit * r.window
end

-- The TTL is set by the first count of each window only (HSET keeps an existing TTL): set at
-- t >= idx * window, it lasts until at least the end of the next window, as long as this
-- window's count matters, and it is never more than two windows. One command fewer per request.
local function window_count(r, v)
  v.cur = v.cur + r.cost
  redis.call('HSET', r.key, 'w', int(v.idx), 'c', int(v.cur), 'p', int(v.prev))
  if v.first_in_window then
    redis.call('PEXPIRE', r.key, int(2 * r.window))
  end
end

local function window_reset(r, v)
  if v.cur > 0 then
    return 2 * r.window - v.elapsed
  elseif v.prev > 0 then
    return r.window - v.elapsed
  end
  return 0
end

-- Least t >= 0 at which usage(now + t) + cost <= limit, nothing more being counted: first
-- while prev decays in this window, then while cur (as next window's prev) decays, else once
-- both are gone.
local function window_retry(r, v)
  local W, e = r.window, v.elapsed
  if r.cost > r.limit then
    return W
  end
  local need = window_usage(r, v) + (r.cost - r.limit) * W
  if need <= 0 then
    return 0
  end
  if v.prev > 0 then
    local t = ceil_div(need, v.prev)
    if t <= W - e - 1 then
      return t
    end
  end
  local need_next = (v.cur + r.cost - r.limit) * W
  if need_next <= 0 then
    return W - e
  end
  local s = ceil_div(need_next, v.cur)
  if s <= W - 1 then
    return W - e + s
  end
  return 2 * W - e
end

local function window_outcome(r, v, allowed)
  local remaining = 0
  local retry = 0
  if allowed then
    remaining = idiv(r.limit * r.window - window_usage(r, v), r.window)
  else
    retry = window_retry(r, v)
  end
  return remaining, window_reset(r, v), retry
end

-- === sliding_log ===

local function log_view(r, now)
  redis.call('ZREMRANGEBYSCORE', r.key, '-inf', int(now - r.window))
  return { usage = redis.call('ZCARD', r.key) }
end

local function log_fits(r, v)
  return v.usage + r.cost <= r.limit
end

local function log_count(r, v, i, now, nonce)
  local stamp = int(now)
  local args = {}
  for u = 1, r.cost do
    args[#args + 1] = stamp
    args[#args + 1] = stamp .. ':' .. nonce .. ':' .. int(i) .. ':' .. int(u)
    if #args >= 2 * ZADD_BATCH or u == r.cost then
      redis.call('ZADD', r.key, unpack(args))
      args = {}
    end
  end
  local cap = r.limit
  if not r.count_denied then
    cap = math.max(r.limit, LOG_CAP)
  end
  local over = v.usage + r.cost - cap
  if over > 0 then
    -- Rank 0 is the oldest (lowest score); members are unique, so exactly `over` go.
    redis.call('ZREMRANGEBYRANK', r.key, 0, int(over - 1))
    v.usage = cap
  else
    v.usage = v.usage + r.cost
  end
  redis.call('PEXPIRE', r.key, int(r.window))
end

-- Score of the entry at 0-based rank `rank` (oldest first), or nil.
local function log_score_at(r, rank)
  local e = redis.call('ZRANGE', r.key, int(rank), int(rank), 'WITHSCORES')
  return tonumber(e[2])
end

local function log_outcome(r, v, allowed, now)
  local remaining, retry, reset = 0, 0, 0
  local newest = log_score_at(r, -1)
  if newest ~= nil then
    reset = math.max(0, newest + r.window - now)
  end
  if allowed then
    remaining = r.limit - v.usage
  elseif r.cost > r.limit then
    retry = r.window
  else
    -- The k-th oldest entry's expiry frees enough room: k = usage + cost - limit (<= usage).
    local kth = log_score_at(r, v.usage + r.cost - r.limit - 1)
    if kth ~= nil then
      retry = math.max(0, kth + r.window - now)
    end
  end
  return remaining, reset, retry
end

-- === the call ===

local rules, err = parse_rules()
if rules == nil then
  return redis.error_reply(err)
end
local nonce = ARGV[2]
local now = now_ms()

local views, allowed, admitted = {}, {}, true
for i, r in ipairs(rules) do
  if r.alg == SLIDING_WINDOW then
    views[i] = window_view(r, now)
    allowed[i] = window_fits(r, views[i])
  else
    views[i] = log_view(r, now)
    allowed[i] = log_fits(r, views[i])
  end
  if not allowed[i] and not r.shadow then
    admitted = false
  end
end

local reply = { admitted and 1 or 0 }
for i, r in ipairs(rules) do
  local counted = admitted or r.count_denied
  local v = views[i]
  local remaining, reset, retry
  if r.alg == SLIDING_WINDOW then
    if counted then
      window_count(r, v)
    end
    remaining, reset, retry = window_outcome(r, v, allowed[i])
  else
    if counted then
      log_count(r, v, i, now, nonce)
    end
    remaining, reset, retry = log_outcome(r, v, allowed[i], now)
  end
  reply[#reply + 1] = allowed[i] and 1 or 0
  reply[#reply + 1] = remaining
  reply[#reply + 1] = reset
  reply[#reply + 1] = retry
end
return reply
