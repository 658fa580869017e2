-- replay_dead_letter.lua: an operator's replay. Removes exactly one record from the dead-letter list and, only if
-- it was there, queues its job again at the tail of its lane, the way admission queues a new job (ticket, job
-- state, lane, doorbell). The move is atomic, so the job is in exactly one of the two lists at every instant,
-- and two operators replaying the same record at once queue it once.
-- The job's old state and replay log are replaced, so the replayed job streams from seq 1 as a fresh job; which is
-- why a record whose job is alive (queued or running: a copy that was requeued, or replayed already) is refused:
-- deleting that state would corrupt the live copy.
--
-- KEYS[1]  the dead-letter list
-- KEYS[2]  the job's lane queue
-- KEYS[3]  the job's state (hash)
-- KEYS[4]  the lane's enqueued-ticket counter
-- KEYS[5]  the lane's served-ticket counter
-- KEYS[6]  worker doorbell (list)
-- KEYS[7]  the job's replay log (list)
-- KEYS[8]  the replay counter
-- KEYS[9]  the dead-letter list's size in bytes
-- ARGV[1]  the dead-letter record exactly as stored
-- ARGV[2]  the envelope to queue (JSON, with its fresh deadline)
-- ARGV[3]  identity
-- ARGV[4]  lane name
-- ARGV[5]  created_at_ms (the replay time: the replayed job is a fresh job)
-- ARGV[6]  job state TTL, s
-- ARGV[7]  most items the doorbell holds
-- Returns  {ticket, position}; {-1, 0} when the record was no longer in the list; {-2, 0} when the job is queued
--          or running (nothing changed in either case).

if not redis.call('LPOS', KEYS[1], ARGV[1]) then
  return {-1, 0}
end
local status = redis.call('HGET', KEYS[3], 'status')
if status == 'queued' or status == 'running' then
  return {-2, 0}
end
redis.call('LREM', KEYS[1], 1, ARGV[1])
-- Records pushed before the byte count was kept can take it below zero: it restarts at zero then.
if redis.call('DECRBY', KEYS[9], #ARGV[1]) < 0 then
  redis.call('SET', KEYS[9], 0)
end
redis.call('DEL', KEYS[3], KEYS[7])
local ticket = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[3],
  'status', 'queued', 'ticket', ticket, 'lane', ARGV[4], 'attempt', 0,
  'identity', ARGV[3], 'created_at_ms', ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('RPUSH', KEYS[2], ARGV[2])
-- One doorbell item wakes one idle worker; the cap keeps the list small while every worker is busy.
if redis.call('LLEN', KEYS[6]) < tonumber(ARGV[7]) then
  redis.call('RPUSH', KEYS[6], '1')
end
redis.call('INCR', KEYS[8])
local served = tonumber(redis.call('GET', KEYS[5]) or '0')
return {ticket, ticket - served}
