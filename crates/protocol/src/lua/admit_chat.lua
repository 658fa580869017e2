-- admit_chat.lua: the gate. Decides, atomically and in one round trip, whether a chat may be queued, and if so
-- queues it: so every limit holds exactly across any number of gateways. Checks, in order: block, paused
-- intake, open circuit, the caller's rate (GCRA), a duplicate to join, the caller's active chats, the caller's
-- daily token budget, the global queue bound. Every decision is counted in the current statistics bucket.
-- Windows are timed by Redis's own clock (TIME), so gateways on several hosts agree without synchronised clocks.
--
-- KEYS[1]   intake paused flag               KEYS[8]   admission statistics bucket (hash)
-- KEYS[2]   circuit breaker (hash)           KEYS[9]   the new job's state (hash)
-- KEYS[3]   the caller's block               KEYS[10]  the job's lane queue
-- KEYS[4]   the caller's rate state (GCRA)   KEYS[11]  the lane's enqueued-ticket counter
-- KEYS[5]   the caller's active jobs (zset)  KEYS[12]  the lane's served-ticket counter
-- KEYS[6]   the duplicate key (or '')        KEYS[13]  worker doorbell (list)
-- KEYS[7]   the caller's token budget on     KEYS[14…] every lane queue, for the global depth
--           the envelope's day
--
-- The duplicate key holds '<job id>\n<content digest>\n<job state key>' of the chat it points at; the script reads
-- that job's state hash (a key named by the record, in the same slot as the others under a hash-tagged prefix)
-- to join only a chat that can still answer.
--
-- ARGV[1]  the envelope's created_at_ms     ARGV[11]  daily token budget (0: none)
-- ARGV[2]  job id                           ARGV[12]  job state TTL, s
-- ARGV[3]  envelope JSON                    ARGV[13]  most items the doorbell holds
-- ARGV[4]  identity                         ARGV[14]  how long a job may count as active, ms
-- ARGV[5]  lane name                        ARGV[15]  measured drain rate, jobs per second (0: unknown)
-- ARGV[6]  rate, chats per second           ARGV[16]  ms until the budget day ends
-- ARGV[7]  burst                            ARGV[17]  a fixed clock, ms since the epoch, for tests only;
-- ARGV[8]  most active chats per caller               '' (what services pass): Redis TIME
-- ARGV[9]  most queued chats in all lanes   ARGV[18]  digest of the chat's content (model, messages, parameters)
-- ARGV[10] duplicate window, ms (0: no      ARGV[19]  tokens to reserve from the budget (prompt estimate +
--          duplicate check)                           max_tokens); reserved only when there is a budget
--                                           ARGV[20]  the admission span's W3C traceparent ('' when tracing
--                                                     is off), kept in the job's state for the relay's span
--
-- Returns {decision, job id, ticket, position, retry_after_ms, rate_remaining, rate_reset_ms} where decision is
-- 'admitted', 'joined' (job id is the existing job's; ticket and position 0), 'idempotency_key_reused' (the
-- duplicate key was first used for another content), or a rejection code: 'blocked', 'maintenance',
-- 'upstream_unavailable', 'rate_limited', 'too_many_active_chats', 'budget_exhausted', 'queue_full'. A refusal
-- changes nothing but the statistics (and, past the rate check, the rate state). An admitted chat has its
-- reservation added to the budget key and recorded in its state as 'reserved_tokens' (0 without a budget); the
-- worker settles it at the job's end.

local now
if ARGV[17] ~= '' then
  now = tonumber(ARGV[17])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- The common path (admitted) runs about 20 commands; checks that rarely fire are folded into one command where
-- they can be, and a TTL is set when its key is created, not on every call.
local function decide(decision, job_id, ticket, position, retry_after_ms, remaining, reset_ms)
  if redis.call('HINCRBY', KEYS[8], decision, 1) == 1 then
    redis.call('EXPIRE', KEYS[8], 120)
  end
  return {decision, job_id, ticket, position, math.ceil(retry_after_ms), remaining, math.ceil(reset_ms)}
end

-- One EXISTS for both rare stops; which one it was is asked only when one is there.
if redis.call('EXISTS', KEYS[3], KEYS[1]) > 0 then
  if redis.call('EXISTS', KEYS[3]) == 1 then
    return decide('blocked', '', 0, 0, math.max(redis.call('PTTL', KEYS[3]), 1000), -1, 0)
  end
  return decide('maintenance', '', 0, 0, 30000, -1, 0)
end
local circuit = redis.call('HMGET', KEYS[2], 'state', 'open_until_ms')
if circuit[1] == 'open' and tonumber(circuit[2] or '0') > now then
  return decide('upstream_unavailable', '', 0, 0, tonumber(circuit[2]) - now, -1, 0)
end

-- GCRA: the bucket is full when the theoretical arrival time (tat) is in the past. Each chat moves tat one
-- emission interval ahead; a chat is allowed while tat stays within burst intervals of now.
local interval = 1000 / tonumber(ARGV[6])
local burst = tonumber(ARGV[7])
local tat = math.max(tonumber(redis.call('GET', KEYS[4]) or '0'), now)
local new_tat = tat + interval
local allowed_until = now + interval * burst
if new_tat > allowed_until then
  return decide('rate_limited', '', 0, 0, new_tat - allowed_until, 0, tat - now)
end
redis.call('SET', KEYS[4], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
local remaining = math.floor((allowed_until - new_tat) / interval)
local reset_ms = new_tat - now

-- The duplicate key is claimed for this job in the same command that finds an earlier one (SET NX GET); a
-- later refusal gives it back. A duplicate joins only a chat that is queued, running or done: a retry after a
-- cancel (an SDK whose connection dropped), a failure or an expiry, or after the state is gone, is a new chat,
-- and the key then points at it. So is one whose cancel was asked for while it runs.
local claimed_duplicate = false
if KEYS[6] ~= '' then
  local record = ARGV[2] .. '\n' .. ARGV[18] .. '\n' .. KEYS[9]
  local existing = redis.call('SET', KEYS[6], record, 'NX', 'GET', 'PX', ARGV[10])
  if existing then
    local job_id, digest, state_key = string.match(existing, '^([^\n]*)\n([^\n]*)\n(.*)$')
    if not job_id then
      -- A record from before digests were kept: the job id alone, joined as it always was.
      return decide('joined', existing, 0, 0, 0, remaining, reset_ms)
    end
    if digest ~= ARGV[18] then
      return decide('idempotency_key_reused', '', 0, 0, 0, remaining, reset_ms)
    end
    -- A running chat whose cancel was asked for is as good as cancelled.
    local state = redis.call('HMGET', state_key, 'status', 'cancel_requested')
    local status = state[1]
    if (status == 'queued' or status == 'running' or status == 'done') and state[2] ~= '1' then
      return decide('joined', job_id, 0, 0, 0, remaining, reset_ms)
    end
    redis.call('SET', KEYS[6], record, 'PX', ARGV[10])
  end
  claimed_duplicate = true
end
local function refuse(decision, retry_after_ms)
  if claimed_duplicate then
    redis.call('DEL', KEYS[6])
  end
  return decide(decision, '', 0, 0, retry_after_ms, remaining, reset_ms)
end

-- Entries past their expiry (jobs that never finished) are dropped only when they could make the difference.
local active_limit = tonumber(ARGV[8])
if redis.call('ZCARD', KEYS[5]) >= active_limit then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if redis.call('ZCARD', KEYS[5]) >= active_limit then
    return refuse('too_many_active_chats', 2000)
  end
end

-- The budget is a hard cap: a chat is admitted only if the most it can cost still fits, and that much is reserved
-- (below, once nothing can refuse any more) until its worker settles what it really used.
local budget = tonumber(ARGV[11])
local reservation = 0
if budget > 0 then
  reservation = tonumber(ARGV[19])
  if tonumber(redis.call('GET', KEYS[7]) or '0') + reservation > budget then
    return refuse('budget_exhausted', tonumber(ARGV[16]))
  end
end

local depth = 0
for index = 14, #KEYS do
  depth = depth + redis.call('LLEN', KEYS[index])
end
if depth >= tonumber(ARGV[9]) then
  local drain = tonumber(ARGV[15])
  local wait_ms = 10000
  if drain > 0 then
    wait_ms = (depth - tonumber(ARGV[9]) + 1) / drain * 1000
  end
  return refuse('queue_full', math.max(wait_ms, 1000))
end

if redis.call('EXISTS', KEYS[9]) == 1 then
  return refuse('duplicate_id', 0)
end
local ticket = redis.call('INCR', KEYS[11])
redis.call('HSET', KEYS[9],
  'status', 'queued', 'ticket', ticket, 'lane', ARGV[5], 'attempt', 0,
  'identity', ARGV[4], 'created_at_ms', ARGV[1], 'reserved_tokens', reservation)
if ARGV[20] ~= '' then
  redis.call('HSET', KEYS[9], 'traceparent', ARGV[20])
end
redis.call('EXPIRE', KEYS[9], ARGV[12])
-- The budget key lives two days, as the worker's charge leaves it: long enough for the day's late settlements.
if reservation > 0 and redis.call('INCRBY', KEYS[7], reservation) == reservation then
  redis.call('EXPIRE', KEYS[7], 172800)
end
redis.call('RPUSH', KEYS[10], ARGV[3])
-- One doorbell item wakes one idle worker; the cap keeps the list small while every worker is busy.
if redis.call('RPUSH', KEYS[13], '1') > tonumber(ARGV[13]) then
  redis.call('RPOP', KEYS[13])
end
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[14]), ARGV[2])
redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[14]))
local served = tonumber(redis.call('GET', KEYS[12]) or '0')
return decide('admitted', ARGV[2], ticket, ticket - served, 0, remaining, reset_ms)
