-- publish_stream_events.lua: appends events to a job's replay log and publishes each on its channel, in one
-- round trip; with a final status it also ends the job: records the status, shortens the state's life to the
-- replay TTL and removes the job from the worker's processing list.
-- Writes are fenced: only the worker and attempt recorded by start_job may write, so a worker presumed dead
-- can never interleave text with the attempt that replaced it.
--
-- KEYS[1]  job state (hash)
-- KEYS[2]  job replay log (list)
-- KEYS[3]  job event channel
-- KEYS[4]  the worker's processing list
-- ARGV[1]  worker id
-- ARGV[2]  attempt
-- ARGV[3]  replay TTL in seconds
-- ARGV[4]  final status, or '' while the job goes on
-- ARGV[5]  the envelope exactly as claimed (to remove it from the processing list when final)
-- ARGV[6]  now, ms since the epoch
-- ARGV[7…] event JSONs, in seq order
-- Returns  the replay log length after the append, or -1 when the fence refused the write (nothing changed).

local owner = redis.call('HMGET', KEYS[1], 'worker', 'attempt')
if owner[1] ~= ARGV[1] or owner[2] ~= ARGV[2] then
  return -1
end
local length = redis.call('LLEN', KEYS[2])
for index = 7, #ARGV do
  length = redis.call('RPUSH', KEYS[2], ARGV[index])
  redis.call('PUBLISH', KEYS[3], ARGV[index])
end
if length > 0 then
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'status', ARGV[4], 'finished_at_ms', ARGV[6])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('LREM', KEYS[4], 1, ARGV[5])
end
return length
