-- publish_stream_events.lua: appends events to a job's replay log and publishes each on its channel, in one
-- round trip; with a final status it also ends the job: records the status, shortens the state's life to the
-- replay TTL, removes the job from the worker's processing list and from the caller's active jobs, charges the
-- tokens used to the caller's daily budget, and, for a job that failed for good, keeps a dead-letter record.
-- Writes are fenced: only the worker and attempt recorded by start_job may write, so a worker presumed dead
-- can never interleave text with the attempt that replaced it.
--
-- KEYS[1]  job state (hash)                    KEYS[5]  the caller's active jobs (sorted set)
-- KEYS[2]  job replay log (list)               KEYS[6]  the dead-letter list
-- KEYS[3]  job event channel                   KEYS[7]  the caller's token budget for today
-- KEYS[4]  the worker's processing list      KEYS[8]  job outcome statistics bucket (hash)
-- ARGV[1]  worker id                           ARGV[6]  now, ms since the epoch
-- ARGV[2]  attempt                             ARGV[7]  job id
-- ARGV[3]  replay TTL, s                       ARGV[8]  dead-letter record (JSON), or ''
-- ARGV[4]  final status, or '' while the job goes on
-- ARGV[5]  the envelope exactly as claimed     ARGV[9]  tokens used, charged when final
-- ARGV[10…] event JSONs, in seq order
-- Returns  the replay log length after the append; -1 when the fence refused the write; -2 when the job's
--          client cancelled it (only a final write goes through then). Refused writes change nothing.

local owner = redis.call('HMGET', KEYS[1], 'worker', 'attempt', 'cancel_requested')
if owner[1] ~= ARGV[1] or owner[2] ~= ARGV[2] then
  return -1
end
local final = ARGV[4] ~= ''
if owner[3] == '1' and not final then
  return -2
end
local length = redis.call('LLEN', KEYS[2])
for index = 10, #ARGV do
  length = redis.call('RPUSH', KEYS[2], ARGV[index])
  redis.call('PUBLISH', KEYS[3], ARGV[index])
end
if length > 0 then
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
if final then
  redis.call('HSET', KEYS[1], 'status', ARGV[4], 'finished_at_ms', ARGV[6])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('LREM', KEYS[4], 1, ARGV[5])
  redis.call('ZREM', KEYS[5], ARGV[7])
  if ARGV[8] ~= '' then
    redis.call('RPUSH', KEYS[6], ARGV[8])
  end
  redis.call('HINCRBY', KEYS[8], ARGV[4], 1)
  redis.call('EXPIRE', KEYS[8], 120)
  local used = tonumber(ARGV[9])
  if used > 0 then
    redis.call('INCRBY', KEYS[7], used)
    redis.call('EXPIRE', KEYS[7], 172800)
  end
end
return length
