-- recover_job.lua: takes a job out of a worker's processing list (a dead worker's, found by the reaper, or a
-- stopping worker's own) and either puts it back at the head of its lane for another attempt, or, when it has
-- been recovered too often (a poison job), ends it: dead-letter record, `failed` status, and an `error` event
-- so its client sees an end. The job is in exactly one list at every instant.
--
-- KEYS[1]  the processing list            KEYS[5]  the job's replay log
-- KEYS[2]  the job's lane queue           KEYS[6]  the job's event channel
-- KEYS[3]  the lane's served-ticket counter KEYS[7]  the dead-letter list
-- KEYS[4]  the job state (hash)           KEYS[8]  the caller's active jobs (sorted set)
--                                         KEYS[9]  job outcome statistics bucket (hash)
-- ARGV[1]  the envelope exactly as it sits in the processing list
-- ARGV[2]  the envelope to put back (attempt raised), when requeueing
-- ARGV[3]  the dead-letter record (JSON), or '' to requeue
-- ARGV[4]  job id
-- ARGV[5]  now, ms since the epoch
-- ARGV[6]  replay TTL, s
-- ARGV[7]  the error message clients see when the job is dead-lettered
-- Returns  'requeued', 'dead_lettered', 'dropped' (its state had expired: nobody can see it any more) or
--          'absent' (it was not in the processing list; nothing changed).

if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 'absent'
end
local status = redis.call('HGET', KEYS[4], 'status')
if not status then
  redis.call('ZREM', KEYS[8], ARGV[4])
  return 'dropped'
end
if ARGV[3] == '' then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  -- The job is waiting again, ahead of everyone: the served counter gives its claim back.
  redis.call('DECR', KEYS[3])
  redis.call('HSET', KEYS[4], 'status', 'queued')
  redis.call('HDEL', KEYS[4], 'worker')
  redis.call('HINCRBY', KEYS[9], 'requeued', 1)
  redis.call('EXPIRE', KEYS[9], 120)
  return 'requeued'
end
redis.call('RPUSH', KEYS[7], ARGV[3])
local seq = redis.call('LLEN', KEYS[5]) + 1
local event = cjson.encode({type = 'error', seq = seq, code = 'job_failed', message = ARGV[7]})
redis.call('RPUSH', KEYS[5], event)
redis.call('PUBLISH', KEYS[6], event)
redis.call('EXPIRE', KEYS[5], ARGV[6])
redis.call('HSET', KEYS[4], 'status', 'failed', 'finished_at_ms', ARGV[5])
redis.call('HDEL', KEYS[4], 'worker')
redis.call('EXPIRE', KEYS[4], ARGV[6])
redis.call('ZREM', KEYS[8], ARGV[4])
redis.call('HINCRBY', KEYS[9], 'failed', 1)
redis.call('EXPIRE', KEYS[9], 120)
return 'dead_lettered'
