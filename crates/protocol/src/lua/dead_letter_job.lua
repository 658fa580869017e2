-- dead_letter_job.lua: moves a job from a worker's processing list to the dead-letter list, atomically, so it
-- is in exactly one of the two at every instant.
--
-- KEYS[1]  the worker's processing list
-- KEYS[2]  the dead-letter list
-- ARGV[1]  the envelope exactly as claimed
-- ARGV[2]  the dead-letter record (JSON)
-- Returns  1 when moved; 0 when the envelope was no longer in the processing list (nothing changed).

if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
