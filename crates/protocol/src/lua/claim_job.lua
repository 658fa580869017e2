-- claim_job.lua: moves the oldest waiting job of the first non-empty lane, in the order the worker gives, into the
-- worker's processing list (the reliable-queue pattern: a job is always in exactly one list until it ends) and
-- counts it as served. The worker picks the order from its own weighted turn (see `lanes_in_claim_order`), so
-- a claim costs no shared counter; an idle lane's share goes to the others and no lane with a weight starves.
-- A script rather than one BLMOVE because BLMOVE watches one list; idle workers block on the doorbell instead.
--
-- KEYS[1]          the worker's processing list
-- KEYS[2]          the worker doorbell (list)
-- KEYS[3], KEYS[4] the lane to try first: its queue, its served-ticket counter
-- KEYS[5], KEYS[6] the next lane to try, and so on
-- Returns          {envelope JSON, index of the lane in the order given (1 = first)}, or nil when every lane is
--                  empty; then the doorbell is cleared too, since every ring it holds is stale.

for lane = 1, (#KEYS - 2) / 2 do
  local envelope = redis.call('LMOVE', KEYS[lane * 2 + 1], KEYS[1], 'LEFT', 'RIGHT')
  if envelope then
    redis.call('INCR', KEYS[lane * 2 + 2])
    return {envelope, lane}
  end
end
redis.call('DEL', KEYS[2])
return nil
