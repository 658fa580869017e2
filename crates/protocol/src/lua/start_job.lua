-- start_job.lua: a worker takes ownership of a claimed job: records itself and the attempt (the fence every
-- later stream write is checked against) and reads how many events the replay log already holds.
--
-- KEYS[1]  job state (hash)
-- KEYS[2]  job replay log (list)
-- ARGV[1]  worker id
-- ARGV[2]  attempt
-- ARGV[3]  now, ms since the epoch
-- Returns  {'running', replay log length} when the job is now this worker's;
--          {status, replay log length} unchanged when the job already reached a final status;
--          {'missing', 0} when the job state no longer exists (it expired).

local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'missing', 0}
end
local length = redis.call('LLEN', KEYS[2])
if status ~= 'queued' and status ~= 'running' then
  return {status, length}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'attempt', ARGV[2], 'started_at_ms', ARGV[3])
return {'running', length}
