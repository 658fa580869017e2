-- cancel_job.lua: a client gave up on a chat. A queued job is cancelled on the spot (a worker that claims it
-- later skips it); a running job is marked, and the caller then tells its worker, which aborts the upstream
-- stream and ends the job. Either way no more capacity or tokens are spent on it. A job cancelled while queued
-- used nothing: the tokens admission reserved on the caller's budget are given back (its worker settles a running
-- one when it ends it).
--
-- KEYS[1]  job state (hash)
-- KEYS[2]  job replay log
-- KEYS[3]  job event channel
-- KEYS[4]  the caller's active jobs (sorted set)
-- KEYS[5]  job outcome statistics bucket (hash)
-- KEYS[6]  the caller's token budget, day of the job's creation
-- ARGV[1]  job id
-- ARGV[2]  now, ms since the epoch
-- ARGV[3]  replay TTL, s
-- ARGV[4]  the error message clients see
-- Returns  {'cancelled', ''} (it was queued), {'cancelling', worker id} (it runs on that worker),
--          {'final', status} (it had already ended) or {'missing', ''}.

local state = redis.call('HMGET', KEYS[1], 'status', 'worker', 'reserved_tokens')
local status = state[1]
if not status then
  return {'missing', ''}
end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  return {'cancelling', state[2] or ''}
end
if status ~= 'queued' then
  return {'final', status}
end
local seq = redis.call('LLEN', KEYS[2]) + 1
local event = cjson.encode({type = 'error', seq = seq, code = 'cancelled', message = ARGV[4]})
redis.call('RPUSH', KEYS[2], event)
redis.call('PUBLISH', KEYS[3], event)
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at_ms', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[1])
local reserved = tonumber(state[3] or '0') or 0
-- A give-back never creates the key (it would start a day below zero).
if reserved > 0 and redis.call('EXISTS', KEYS[6]) == 1 then
  redis.call('DECRBY', KEYS[6], reserved)
end
redis.call('HINCRBY', KEYS[5], 'cancelled', 1)
redis.call('EXPIRE', KEYS[5], 120)
return {'cancelled', ''}
