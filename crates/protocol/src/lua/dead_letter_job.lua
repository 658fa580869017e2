-- dead_letter_job.lua: moves a job from a worker's processing list to the dead-letter list, atomically, so it
-- is in exactly one of the two at every instant. The list is kept within its caps: the oldest records are dropped
-- (and counted) while it is over either, and its size in bytes is kept beside it.
--
-- KEYS[1]  the worker's processing list
-- KEYS[2]  the dead-letter list
-- KEYS[3]  the dead-letter list's size in bytes
-- KEYS[4]  the counter of dead letters dropped by the caps
-- ARGV[1]  the envelope exactly as claimed
-- ARGV[2]  the dead-letter record (JSON)
-- ARGV[3]  most dead-letter records kept
-- ARGV[4]  most bytes of dead-letter records kept
-- Returns  {1, dead letters dropped} when moved; {0, 0} when the envelope was no longer in the processing list
--          (nothing changed).

if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return {0, 0}
end
redis.call('RPUSH', KEYS[2], ARGV[2])
local bytes = redis.call('INCRBY', KEYS[3], #ARGV[2])
local dropped = 0
while redis.call('LLEN', KEYS[2]) > tonumber(ARGV[3]) or bytes > tonumber(ARGV[4]) do
  local oldest = redis.call('LPOP', KEYS[2])
  if not oldest then
    redis.call('SET', KEYS[3], 0)
    break
  end
  bytes = redis.call('DECRBY', KEYS[3], #oldest)
  dropped = dropped + 1
end
if dropped > 0 then
  redis.call('INCRBY', KEYS[4], dropped)
end
return {1, dropped}
