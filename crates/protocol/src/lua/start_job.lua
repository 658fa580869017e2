-- start_job.lua: a worker takes ownership of a claimed job. It records itself and a fresh fence (the job's attempt
-- counter, raised by every start), and reads how long the replay log already is. When the job ran before (or its
-- log holds events), a `reset` event is appended and published at once: clients discard the earlier text, and
-- the log grows past every length the earlier attempt expects, so that attempt's later writes are refused (see
-- append_stream_events.lua: writes are fenced by the log length they must produce).
--
-- KEYS[1]  job state (hash)
-- KEYS[2]  job replay log (list)
-- KEYS[3]  job event channel
-- ARGV[1]  worker id
-- ARGV[2]  now, ms since the epoch
-- ARGV[3]  TTL of a replay log this script creates, s (the job's longest remaining life plus the replay time)
-- Returns  {'running', replay log length, fence, cancel requested (0/1)} when the job is now this worker's;
--          {status, replay log length, 0, 0} unchanged when the job already reached a final status;
--          {'missing', 0, 0, 0} when the job state no longer exists (it expired).

local state = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'cancel_requested')
local status = state[1]
if not status then
  return {'missing', 0, 0, 0}
end
local length = redis.call('LLEN', KEYS[2])
if status ~= 'queued' and status ~= 'running' then
  return {status, length, 0, 0}
end
local fence = (tonumber(state[2]) or 0) + 1
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'attempt', fence, 'started_at_ms', ARGV[2])
if fence > 1 or length > 0 then
  local reset = string.format('{"type":"reset","seq":%d}', length + 1)
  length = redis.call('RPUSH', KEYS[2], reset)
  redis.call('PUBLISH', KEYS[3], reset)
  if length == 1 then
    redis.call('EXPIRE', KEYS[2], ARGV[3])
  end
end
local cancel_requested = 0
if state[3] == '1' then
  cancel_requested = 1
end
return {'running', length, fence, cancel_requested}
