-- acquire_upstream_permit.lua: may a worker start one upstream LLM request now? Enforces, across all workers:
-- the circuit breaker (open: nobody calls; half-open: a few probes), at most N request starts in any sliding
-- one-second window (an exact log of start times), and at most M tokens in the last 60 whole seconds (the
-- request's max_tokens is reserved now and settled with its real usage by settle_upstream_call.lua).
--
-- KEYS[1]  circuit breaker (hash: state, open_until_ms, probes)
-- KEYS[2]  request starts (sorted set: member = permit id, score = start ms)
-- KEYS[3]  token use per second (hash: unix second -> tokens)
-- ARGV[1]  the sliding window's length, ms: one second plus a margin for the jitter between a permit and the
--          request reaching the upstream, so starts seen there still respect the limit
-- ARGV[2]  permit id (unique per request)
-- ARGV[3]  most request starts per second
-- ARGV[4]  most tokens per minute
-- ARGV[5]  tokens to reserve
-- ARGV[6]  most probes at once while half-open
-- ARGV[7]  how long a probe may take, ms (a probe that never settles frees its place after this)
-- Returns  {'granted', is_probe (0/1), reserved tokens, the second reserved in}, {'wait', ms to wait, 0, 0} or
--          {'circuit_open', ms to wait, 0, 0}: always four items.

-- Redis's clock, not the worker's: every worker is measured against the same time.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[1])
local circuit = redis.call('HMGET', KEYS[1], 'state', 'open_until_ms', 'probes', 'probes_expire_ms')
local state = circuit[1] or 'closed'
if state == 'open' then
  local open_until = tonumber(circuit[2] or '0')
  if now < open_until then
    return {'circuit_open', open_until - now, 0, 0}
  end
  -- The cool-down is over: let probes find out whether the upstream recovered.
  state = 'half_open'
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probes', 0)
  circuit[3] = '0'
end
local is_probe = 0
if state == 'half_open' then
  if now > tonumber(circuit[4] or '0') then
    circuit[3] = '0'
    redis.call('HSET', KEYS[1], 'probes', 0)
  end
  if tonumber(circuit[3] or '0') >= tonumber(ARGV[6]) then
    return {'circuit_open', 250, 0, 0}
  end
  is_probe = 1
end

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {'wait', math.max(tonumber(oldest[2]) + window - now, 1), 0, 0}
end

local second = math.floor(now / 1000)
local used = 0
local oldest_second = second
local per_second = redis.call('HGETALL', KEYS[3])
for index = 1, #per_second, 2 do
  local field_second = tonumber(per_second[index])
  if field_second <= second - 60 then
    redis.call('HDEL', KEYS[3], per_second[index])
  else
    used = used + tonumber(per_second[index + 1])
    oldest_second = math.min(oldest_second, field_second)
  end
end
local budget = tonumber(ARGV[4])
local reserve = math.min(tonumber(ARGV[5]), budget)
if used + reserve > budget then
  return {'wait', math.max((oldest_second + 60) * 1000 - now, 1), 0, 0}
end

redis.call('ZADD', KEYS[2], now, ARGV[2])
redis.call('PEXPIRE', KEYS[2], window * 2)
redis.call('HINCRBY', KEYS[3], second, reserve)
redis.call('EXPIRE', KEYS[3], 120)
if is_probe == 1 then
  redis.call('HINCRBY', KEYS[1], 'probes', 1)
  redis.call('HSET', KEYS[1], 'probes_expire_ms', now + tonumber(ARGV[7]))
end
return {'granted', is_probe, reserve, second}
