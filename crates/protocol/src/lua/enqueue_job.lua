-- enqueue_job.lua: puts a validated job at the tail of its lane and records its state, in one atomic step.
--
-- KEYS[1]  lane queue (list of envelopes)
-- KEYS[2]  job state (hash)
-- KEYS[3]  lane enqueued-ticket counter
-- KEYS[4]  lane served-ticket counter
-- KEYS[5]  worker doorbell (list)
-- ARGV[1]  envelope JSON
-- ARGV[2]  identity
-- ARGV[3]  lane name
-- ARGV[4]  created_at_ms
-- ARGV[5]  job state TTL in seconds
-- ARGV[6]  most items the doorbell may hold
-- Returns  {ticket, position}, or {-1, 0} when a job with this id already exists (nothing is changed then).

if redis.call('EXISTS', KEYS[2]) == 1 then
  return {-1, 0}
end
local ticket = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[2],
  'status', 'queued', 'ticket', ticket, 'lane', ARGV[3], 'attempt', 0,
  'identity', ARGV[2], 'created_at_ms', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('RPUSH', KEYS[1], ARGV[1])
-- One doorbell item wakes one idle worker; the cap keeps the list small while every worker is busy.
if redis.call('LLEN', KEYS[5]) < tonumber(ARGV[6]) then
  redis.call('RPUSH', KEYS[5], '1')
end
local served = tonumber(redis.call('GET', KEYS[4]) or '0')
return {ticket, ticket - served}
