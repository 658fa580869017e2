-- acquire_upstream_permit.lua: may a worker start one upstream LLM request, and when? Enforces, across all
-- workers: the circuit breaker (open: nobody calls; half-open: a few probes), evenly spaced request starts (one
-- start slot every `spacing` ms, timed by Redis's clock: a start rate that never bunches, so the upstream never
-- sees more than the limit in any one-second window, while the drain stays close to the limit), and at most M
-- tokens in the last 60 whole seconds (the request's max_tokens is reserved now and settled with its real usage
-- by settle_upstream_call.lua).
-- A granted permit reserves the next free start slot, at most `horizon` ms ahead: the worker sleeps until its
-- slot, then calls. A slot further ahead is not reserved: the answer says how long to wait before asking again.
--
-- KEYS[1]  circuit breaker (hash: state, open_until_ms, probes, probes_expire_ms)
-- KEYS[2]  the next free start slot (string: ms since the epoch, fractional)
-- KEYS[3]  token use per second (hash: unix second -> tokens)
-- ARGV[1]  spacing between two starts, ms (1000 / the rate limit, plus the allowance for start jitter)
-- ARGV[2]  horizon: how far ahead a start slot may be reserved, ms
-- ARGV[3]  most tokens per minute
-- ARGV[4]  tokens to reserve
-- ARGV[5]  most probes at once while half-open
-- ARGV[6]  how long a probe may take, ms (a probe that never settles frees its place after this)
-- Returns  {'granted', is_probe (0/1), reserved tokens, the second reserved in, ms until the start slot},
--          {'wait', ms to wait, 0, 0, 0} or {'circuit_open', ms to wait, 0, 0, 0}: always five items.

-- Redis's clock, not the worker's: every worker is measured against the same time.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local circuit = redis.call('HMGET', KEYS[1], 'state', 'open_until_ms', 'probes', 'probes_expire_ms')
local state = circuit[1] or 'closed'
if state == 'open' then
  local open_until = tonumber(circuit[2] or '0')
  if now < open_until then
    return {'circuit_open', math.ceil(open_until - now), 0, 0, 0}
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
  if tonumber(circuit[3] or '0') >= tonumber(ARGV[5]) then
    return {'circuit_open', 250, 0, 0, 0}
  end
  is_probe = 1
end

local spacing = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])
local slot = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
if slot - now > horizon then
  return {'wait', math.max(math.ceil(slot - now - horizon), 1), 0, 0, 0}
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
local budget = tonumber(ARGV[3])
local reserve = math.min(tonumber(ARGV[4]), budget)
if used + reserve > budget then
  return {'wait', math.max(math.ceil((oldest_second + 60) * 1000 - now), 1), 0, 0, 0}
end

-- The slot after this one; forgotten once it is long past, so an idle upstream costs no key.
redis.call('SET', KEYS[2], tostring(slot + spacing), 'PX', math.ceil(slot + spacing - now + horizon) + 1000)
if redis.call('HINCRBY', KEYS[3], second, reserve) == reserve then
  redis.call('EXPIRE', KEYS[3], 120)
end
if is_probe == 1 then
  redis.call('HINCRBY', KEYS[1], 'probes', 1)
  redis.call('HSET', KEYS[1], 'probes_expire_ms', math.floor(now) + tonumber(ARGV[6]))
end
return {'granted', is_probe, reserve, second, math.floor(slot - now)}
