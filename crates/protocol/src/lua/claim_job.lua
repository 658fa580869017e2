-- claim_job.lua: moves the oldest waiting job of a lane into a worker's processing list (the reliable-queue
-- pattern: a job is always in exactly one list until it ends) and counts it as served. Lanes share the workers
-- by weight: a shared turn counter picks which lane is tried first, the others follow in priority order, so an
-- idle lane's share goes to the others and no lane with a weight is ever starved.
-- A script rather than one BLMOVE because BLMOVE watches one list; idle workers block on the doorbell instead.
--
-- KEYS[1]          the worker's processing list
-- KEYS[2]          the worker doorbell (list)
-- KEYS[3]          the lane turn counter
-- KEYS[4], KEYS[5] first lane in priority order: its queue, its served-ticket counter
-- KEYS[6], KEYS[7] next lane, and so on
-- ARGV[i]          the weight of lane i (at least 1)
-- Returns          {envelope JSON, index of the lane (1 = first)}, or nil when every lane is empty; then the
--                  doorbell is cleared too, since every ring it holds is stale.

local lanes = (#KEYS - 3) / 2
local total = 0
for lane = 1, lanes do
  total = total + tonumber(ARGV[lane])
end
local slot = redis.call('INCR', KEYS[3]) % total
local first = lanes
local cumulative = 0
for lane = 1, lanes do
  cumulative = cumulative + tonumber(ARGV[lane])
  if slot < cumulative then
    first = lane
    break
  end
end

local function try_lane(lane)
  local envelope = redis.call('LMOVE', KEYS[lane * 2 + 2], KEYS[1], 'LEFT', 'RIGHT')
  if envelope then
    redis.call('INCR', KEYS[lane * 2 + 3])
  end
  return envelope
end

local envelope = try_lane(first)
if envelope then
  return {envelope, first}
end
for lane = 1, lanes do
  if lane ~= first then
    envelope = try_lane(lane)
    if envelope then
      return {envelope, lane}
    end
  end
end
redis.call('DEL', KEYS[2])
return nil
