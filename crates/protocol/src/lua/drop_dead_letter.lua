-- drop_dead_letter.lua: an operator drops one dead-letter record: it leaves the list and its bytes leave the
-- list's size, in one step, so the byte cap stays exact.
--
-- KEYS[1]  the dead-letter list
-- KEYS[2]  the dead-letter list's size in bytes
-- ARGV[1]  the dead-letter record exactly as stored
-- Returns  1 when the record was removed; 0 when it was no longer in the list (nothing changed).

if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
-- Records pushed before the byte count was kept can take it below zero: it restarts at zero then.
if redis.call('DECRBY', KEYS[2], #ARGV[1]) < 0 then
  redis.call('SET', KEYS[2], 0)
end
return 1
