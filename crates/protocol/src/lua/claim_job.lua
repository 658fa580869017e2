-- claim_job.lua: moves up to N of the oldest waiting jobs into a worker's processing list (the reliable-queue
-- pattern: a job is always in exactly one list until it ends) and counts them as served. Lanes are tried in the
-- order the worker gives, which it picks from its own weighted turn (see `lanes_in_claim_order`): a claim costs
-- no shared counter, an idle lane's share goes to the others, and no lane with a weight starves. A worker with
-- many free slots takes many jobs in one round trip, so its intake keeps up under load.
-- A script rather than one BLMOVE because BLMOVE watches one list; idle workers block on the doorbell instead.
--
-- KEYS[1]          the worker's processing list
-- KEYS[2]          the worker doorbell (list)
-- KEYS[3], KEYS[4] the lane to try first: its queue, its served-ticket counter
-- KEYS[5], KEYS[6] the next lane to try, and so on
-- ARGV[1]          most jobs to claim (at least 1)
-- Returns          {index of the lane in the order given (1 = first), envelope JSON, ...} for each job claimed,
--                  oldest first; empty when every lane is empty: then the doorbell is cleared too, since every
--                  ring it holds is stale.

local wanted = math.max(tonumber(ARGV[1]), 1)
local claimed = {}
for lane = 1, (#KEYS - 2) / 2 do
  local taken = 0
  while #claimed < wanted * 2 do
    local envelope = redis.call('LMOVE', KEYS[lane * 2 + 1], KEYS[1], 'LEFT', 'RIGHT')
    if not envelope then
      break
    end
    claimed[#claimed + 1] = lane
    claimed[#claimed + 1] = envelope
    taken = taken + 1
  end
  if taken > 0 then
    redis.call('INCRBY', KEYS[lane * 2 + 2], taken)
  end
  if #claimed >= wanted * 2 then
    return claimed
  end
end
if #claimed == 0 then
  redis.call('DEL', KEYS[2])
end
return claimed
