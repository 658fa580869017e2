-- settle_upstream_call.lua: after an upstream request ends, gives back the tokens it reserved but did not use,
-- and records its outcome in the circuit breaker's sliding window: the circuit opens when, over the window, at
-- least min_calls calls were made and the failed share reached the threshold; a probe's outcome closes it
-- (success) or opens it again (failure). A success that was no probe cannot open the circuit, so it costs two
-- increments and no read.
--
-- KEYS[1]  circuit breaker (hash: state, open_until_ms, probes)
-- KEYS[2]  circuit outcomes (hash: '<unix second>:ok' / '<unix second>:failed' -> count)
-- KEYS[3]  token use per second (hash)
-- ARGV[1]  now, ms since the epoch
-- ARGV[2]  the second the tokens were reserved in
-- ARGV[3]  tokens reserved
-- ARGV[4]  tokens used
-- ARGV[5]  outcome: 'ok', 'failed' or 'neutral' (a client error or a cancellation says nothing of upstream health)
-- ARGV[6]  1 when this call was a half-open probe
-- ARGV[7]  window, s
-- ARGV[8]  fewest calls in the window before the circuit may open
-- ARGV[9]  failed share that opens the circuit (0..1)
-- ARGV[10] cool-down, ms
-- Returns  the circuit state afterwards ('closed', 'open' or 'half_open'), or 'unchanged' when this call could
--          not have changed it (nothing was read).

local now = tonumber(ARGV[1])
local refund = tonumber(ARGV[4]) - tonumber(ARGV[3])
if refund ~= 0 then
  -- A field older than the 60-second window may come back with a negative count: the next permit request drops
  -- every such field before it sums, so it never counts.
  redis.call('HINCRBY', KEYS[3], ARGV[2], refund)
end

local outcome = ARGV[5]
if ARGV[6] == '1' then
  redis.call('HINCRBY', KEYS[1], 'probes', -1)
  if outcome == 'ok' then
    redis.call('DEL', KEYS[1], KEYS[2])
    return 'closed'
  elseif outcome == 'failed' then
    redis.call('HSET', KEYS[1], 'state', 'open', 'open_until_ms', now + tonumber(ARGV[10]), 'probes', 0)
    return 'open'
  end
  return redis.call('HGET', KEYS[1], 'state') or 'closed'
end
if outcome == 'neutral' then
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
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until_ms', now + tonumber(ARGV[10]), 'probes', 0)
  redis.call('DEL', KEYS[2])
  return 'open'
end
return 'closed'
