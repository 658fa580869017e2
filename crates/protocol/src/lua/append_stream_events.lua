-- append_stream_events.lua: appends a batch of a running job's events to its replay log and publishes the batch
-- as one message (the events' JSON joined by newlines), in one round trip and with no read on the way.
-- Fenced by length: the writer names the log length its batch must produce (the last event's seq). Only the
-- attempt that owns the job can know it: start_job.lua appends a `reset` whenever an attempt takes over, so the
-- log always grows past what an earlier attempt expects. A write that lands at any other length is taken back at
-- once, before anything is published, and refused; unless the log already holds this very batch at its place,
-- which is how a retry of a write whose reply was lost finds it (then nothing is written or published again).
--
-- KEYS[1]  job replay log (list)
-- KEYS[2]  job event channel
-- ARGV[1]  the log length after this batch (the seq of its last event)
-- ARGV[2]  a TTL to set on the log, s, or 0 to leave it (given with an attempt's first write only)
-- ARGV[3…] event JSONs, in seq order
-- Returns  the replay log length after the append, or -1 when the fence refused the write (nothing changed).

local expected = tonumber(ARGV[1])
local length = redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
if length ~= expected then
  redis.call('RPOP', KEYS[1], #ARGV - 2)
  if redis.call('LINDEX', KEYS[1], expected - 1) == ARGV[#ARGV] then
    return expected
  end
  return -1
end
redis.call('PUBLISH', KEYS[2], table.concat(ARGV, '\n', 3))
if ARGV[2] ~= '0' then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return length
