-- settle_upstream_call.lua: after an upstream request ends, gives back the tokens it reserved but did not use,
-- and records its outcome in the circuit breaker's sliding window: the circuit opens when, over the window, at
-- least min_calls calls were made and the failed share reached the threshold; a probe's outcome closes it
-- (success) or opens it again (failure). A success that was no probe cannot open the circuit, so it costs two
-- increments and no read.
-- A 'throttled' call (the provider answered 429) is backpressure, not failure: the upstream is healthy and says
-- we go too fast. It never counts toward the breaker (a provider's rate limit must not turn into 503 for
-- everyone); instead it pushes the shared next start slot (the one acquire_upstream_permit.lua reserves from) to
-- at least now + hold-back, so no worker starts a request before the provider's Retry-After has passed, and the
-- starts after it are spaced as usual from there. Pushing the slot was chosen over halving an effective rate:
-- the provider says exactly how long to wait, and a slot in the past costs nothing, so nothing needs to recover.
-- Every time here is Redis's clock (as in acquire_upstream_permit.lua), so workers on hosts whose clocks
-- disagree still share one breaker window and one start slot.
--
-- KEYS[1]  circuit breaker (hash: state, open_until_ms, probes)
-- KEYS[2]  circuit outcomes (hash: '<unix second>:ok' / '<unix second>:failed' -> count)
-- KEYS[3]  token use per second (hash)
-- KEYS[4]  the next free start slot (string: ms since the epoch, fractional)
-- ARGV[1]  now, ms since the epoch; '' (what the workers send) = Redis's TIME. A number is for tests that need
--          a fixed clock.
-- ARGV[2]  the second the tokens were reserved in
-- ARGV[3]  tokens reserved
-- ARGV[4]  tokens used
-- ARGV[5]  outcome: 'ok', 'failed', 'throttled' (429: backpressure) or 'neutral' (a client error or a
--          cancellation says nothing of upstream health)
-- ARGV[6]  1 when this call was a half-open probe
-- ARGV[7]  window, s
-- ARGV[8]  fewest calls in the window before the circuit may open
-- ARGV[9]  failed share that opens the circuit (0..1)
-- ARGV[10] cool-down, ms
-- ARGV[11] hold-back, ms: no request may start before now + this (the provider's Retry-After for a 'throttled'
--          call; 0 for the others)
-- Returns  the circuit state afterwards ('closed', 'open' or 'half_open'), or 'unchanged' when this call could
--          not have changed it (nothing was read).

local now
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
else
  now = tonumber(ARGV[1])
end
local refund = tonumber(ARGV[4]) - tonumber(ARGV[3])
if refund ~= 0 then
  -- A field older than the 60-second window may come back with a negative count: the next permit request drops
  -- every such field before it sums, so it never counts.
  redis.call('HINCRBY', KEYS[3], ARGV[2], refund)
end

local hold_back = tonumber(ARGV[11]) or 0
if hold_back > 0 then
  local slot = math.max(tonumber(redis.call('GET', KEYS[4]) or '0'), now + hold_back)
  -- Forgotten a second after it passed, as acquire_upstream_permit.lua does: a slot in the past is no slot.
  redis.call('SET', KEYS[4], tostring(slot), 'PX', math.ceil(slot - now) + 1000)
end

local outcome = ARGV[5]
if ARGV[6] == '1' then
  redis.call('HINCRBY', KEYS[1], 'probes', -1)
  if outcome == 'ok' then
    redis.call('DEL', KEYS[1], KEYS[2])
    return 'closed'
  elseif outcome == 'failed' then
    redis.call('HSET', KEYS[1], 'state', 'open', 'open_until_ms', math.floor(now + tonumber(ARGV[10])), 'probes', 0)
    return 'open'
  end
  -- A throttled or neutral probe proves nothing either way: the circuit stays half-open for the next probe.
  return redis.call('HGET', KEYS[1], 'state') or 'closed'
end
if outcome == 'neutral' or outcome == 'throttled' then
  return 'unchanged'
end

local second = math.floor(now / 1000)
if redis.call('HINCRBY', KEYS[2], second .. ':' .. outcome, 1) == 1 then
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]) * 2)
end
if outcome == 'ok' then
  return 'unchanged'
end
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state ~= 'closed' then
  return state
end
local window_start = second - tonumber(ARGV[7])
local ok, failed = 0, 0
local counts = redis.call('HGETALL', KEYS[2])
for index = 1, #counts, 2 do
  local field_second, kind = string.match(counts[index], '^(%d+):(%a+)$')
  if tonumber(field_second) <= window_start then
    redis.call('HDEL', KEYS[2], counts[index])
  elseif kind == 'ok' then
    ok = ok + tonumber(counts[index + 1])
  else
    failed = failed + tonumber(counts[index + 1])
  end
end
local total = ok + failed
if total >= tonumber(ARGV[8]) and failed / total >= tonumber(ARGV[9]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until_ms', math.floor(now + tonumber(ARGV[10])), 'probes', 0)
  redis.call('DEL', KEYS[2])
  return 'open'
end
return 'closed'
