-- recover_job.lua: takes a job out of a worker's processing list (a dead worker's, found by the reaper, a
-- stopping worker's own, or a live worker's own attempt that lost Redis) and decides, looking at the job's state:
-- - it already ended, or another attempt (another worker) owns it now: the entry is only removed;
-- - its client cancelled it: it ends as cancelled (an `error` event with code `cancelled`, off the caller's
--   active jobs, counted, its budget reservation given back), since running it again would answer nobody;
-- - it has been recovered too often (a poison job, a dead-letter record given): it ends for good with a
--   dead-letter record (the list kept within its caps), `failed` status, an `error` event, its reservation given
--   back;
-- - otherwise it goes back to the head of its lane for another attempt (whose start appends a `reset`), and
--   rings the doorbell so an idle worker takes it at once.
-- The job is in exactly one list at every instant.
--
-- KEYS[1]  the processing list                KEYS[8]  the caller's active jobs (sorted set)
-- KEYS[2]  the job's lane queue               KEYS[9]  job outcome statistics bucket (hash)
-- KEYS[3]  the lane's served-ticket counter   KEYS[10] worker doorbell (list)
-- KEYS[4]  the job state (hash)               KEYS[11] the caller's token budget, day of the job's creation
-- KEYS[5]  the job's replay log               KEYS[12] the dead-letter list's size in bytes
-- KEYS[6]  the job's event channel            KEYS[13] the counter of dead letters dropped by the caps
-- KEYS[7]  the dead-letter list
-- ARGV[1]  the envelope exactly as it sits in the processing list
-- ARGV[2]  the envelope to put back (attempt raised), when requeueing
-- ARGV[3]  the dead-letter record (JSON), or '' to requeue
-- ARGV[4]  job id
-- ARGV[5]  now, ms since the epoch
-- ARGV[6]  replay TTL, s
-- ARGV[7]  the error message clients see when the job is dead-lettered
-- ARGV[8]  the id of the worker whose processing list this is
-- ARGV[9]  the error message clients see when the job was cancelled
-- ARGV[10] most items the doorbell holds
-- ARGV[11] most dead-letter records kept
-- ARGV[12] most bytes of dead-letter records kept
-- Returns  {outcome, dead letters dropped}, outcome one of 'requeued', 'dead_lettered', 'cancelled',
--          'released' (it had ended, or another attempt owns it: only the entry was removed), 'dropped' (its
--          state had expired: nobody can see it any more) or 'absent' (it was not in the processing list; nothing
--          changed).

if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return {'absent', 0}
end
local state = redis.call('HMGET', KEYS[4], 'status', 'worker', 'cancel_requested', 'reserved_tokens')
local status = state[1]
if not status then
  redis.call('ZREM', KEYS[8], ARGV[4])
  return {'dropped', 0}
end
if status ~= 'queued' and status ~= 'running' then
  return {'released', 0}
end
if status == 'running' and state[2] and state[2] ~= ARGV[8] then
  return {'released', 0}
end

-- Ends the job with one error event its client sees, gives its budget reservation back and counts the outcome.
local function end_job(final_status, code, message)
  local seq = redis.call('LLEN', KEYS[5]) + 1
  local event = cjson.encode({type = 'error', seq = seq, code = code, message = message})
  redis.call('RPUSH', KEYS[5], event)
  redis.call('PUBLISH', KEYS[6], event)
  redis.call('EXPIRE', KEYS[5], ARGV[6])
  redis.call('HSET', KEYS[4], 'status', final_status, 'finished_at_ms', ARGV[5])
  redis.call('HDEL', KEYS[4], 'worker')
  redis.call('EXPIRE', KEYS[4], ARGV[6])
  redis.call('ZREM', KEYS[8], ARGV[4])
  local reserved = tonumber(state[4] or '0') or 0
  if reserved > 0 and redis.call('EXISTS', KEYS[11]) == 1 then
    redis.call('DECRBY', KEYS[11], reserved)
  end
  if redis.call('HINCRBY', KEYS[9], final_status, 1) == 1 then
    redis.call('EXPIRE', KEYS[9], 120)
  end
end

if state[3] == '1' then
  end_job('cancelled', 'cancelled', ARGV[9])
  return {'cancelled', 0}
end
if ARGV[3] == '' then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  -- The job is waiting again, ahead of everyone: the served counter gives its claim back.
  redis.call('DECR', KEYS[3])
  redis.call('HSET', KEYS[4], 'status', 'queued')
  redis.call('HDEL', KEYS[4], 'worker')
  if redis.call('HINCRBY', KEYS[9], 'requeued', 1) == 1 then
    redis.call('EXPIRE', KEYS[9], 120)
  end
  -- One doorbell item wakes one idle worker; the cap keeps the list small while every worker is busy.
  if redis.call('RPUSH', KEYS[10], '1') > tonumber(ARGV[10]) then
    redis.call('RPOP', KEYS[10])
  end
  return {'requeued', 0}
end
-- Capped: the oldest records go first while the list is over either cap, each one counted.
redis.call('RPUSH', KEYS[7], ARGV[3])
local bytes = redis.call('INCRBY', KEYS[12], #ARGV[3])
local dropped = 0
while redis.call('LLEN', KEYS[7]) > tonumber(ARGV[11]) or bytes > tonumber(ARGV[12]) do
  local oldest = redis.call('LPOP', KEYS[7])
  if not oldest then
    redis.call('SET', KEYS[12], 0)
    break
  end
  bytes = redis.call('DECRBY', KEYS[12], #oldest)
  dropped = dropped + 1
end
if dropped > 0 then
  redis.call('INCRBY', KEYS[13], dropped)
end
end_job('failed', 'job_failed', ARGV[7])
return {'dead_lettered', dropped}
