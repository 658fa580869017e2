-- claim_job.lua: moves the oldest waiting job of the first non-empty lane into a worker's processing list
-- (the reliable-queue pattern: a job is always in exactly one list until it ends) and counts it as served.
-- A script rather than one BLMOVE because a worker serves several lanes in a chosen order and BLMOVE watches
-- one list; idle workers block on the doorbell list instead of polling.
--
-- KEYS[1]          the worker's processing list
-- KEYS[2]          the worker doorbell (list)
-- KEYS[3], KEYS[4] first lane to try: its queue, its served-ticket counter
-- KEYS[5], KEYS[6] next lane, and so on
-- ARGV             none
-- Returns          {envelope JSON, index of the lane pair (1 = first)}, or nil when every lane is empty; then
--                  the doorbell is cleared too, since every ring it holds is stale.

for pair = 1, (#KEYS - 2) / 2 do
  local queue = KEYS[pair * 2 + 1]
  local envelope = redis.call('LMOVE', queue, KEYS[1], 'LEFT', 'RIGHT')
  if envelope then
    redis.call('INCR', KEYS[pair * 2 + 2])
    return {envelope, pair}
  end
end
redis.call('DEL', KEYS[2])
return nil
