-- finish_job.lua: ends a job with its last events, once. Appends and publishes the events (as one message, like
-- append_stream_events.lua), records the final status, shortens the state's life to the replay TTL, removes the
-- job from the worker's processing list and from the caller's active jobs, settles the caller's daily budget
-- against what admission reserved, counts the outcome, and, for a job that failed for good, keeps a dead-letter
-- record (dropping the oldest records while the list is over either of its caps).
-- Fenced twice: only the worker and attempt recorded by start_job may end the job, and the events must land at
-- the length the writer expects. A job that already ended is left as it is, so a retried ending (its first
-- reply lost) never charges, counts or dead-letters twice.
-- The budget: admission added the job's reservation (`reserved_tokens` in the state, 0 when absent) to the
-- budget key of the day the job was created; the ending adds `tokens used - reserved`, so the key ends up
-- holding what was really used. A give-back never creates the key (it would start a day below zero).
--
-- KEYS[1]  job state (hash)                    KEYS[6]  the dead-letter list
-- KEYS[2]  job replay log (list)               KEYS[7]  the caller's token budget, day of the job's creation
-- KEYS[3]  job event channel                   KEYS[8]  job outcome statistics bucket (hash)
-- KEYS[4]  the worker's processing list        KEYS[9]  the dead-letter list's size in bytes
-- KEYS[5]  the caller's active jobs (sorted set) KEYS[10] the counter of dead letters dropped by the caps
-- ARGV[1]  worker id                           ARGV[8]  dead-letter record (JSON), or ''
-- ARGV[2]  attempt (the fence from start_job)  ARGV[9]  tokens used
-- ARGV[3]  replay TTL, s                       ARGV[10] the log length after the events (last seq)
-- ARGV[4]  final status                        ARGV[11] a TTL for the log, s, when this write creates it, or 0
-- ARGV[5]  the envelope exactly as claimed     ARGV[12] most dead-letter records kept
-- ARGV[6]  now, ms since the epoch             ARGV[13] most bytes of dead-letter records kept
-- ARGV[7]  job id                              ARGV[14…] event JSONs, in seq order
-- Returns  {replay log length, dead letters dropped}; the length is -1 when a fence refused the write, -2 when
--          the job had already ended (nothing changed either way).

local FIRST_EVENT = 14
local owner = redis.call('HMGET', KEYS[1], 'worker', 'attempt', 'status', 'reserved_tokens')
if owner[1] ~= ARGV[1] or owner[2] ~= ARGV[2] then
  return {-1, 0}
end
if owner[3] ~= 'running' then
  return {-2, 0}
end
local length = tonumber(ARGV[10])
if #ARGV >= FIRST_EVENT then
  length = redis.call('RPUSH', KEYS[2], unpack(ARGV, FIRST_EVENT))
  if length ~= tonumber(ARGV[10]) then
    redis.call('RPOP', KEYS[2], #ARGV - FIRST_EVENT + 1)
    return {-1, 0}
  end
  redis.call('PUBLISH', KEYS[3], table.concat(ARGV, '\n', FIRST_EVENT))
  if ARGV[11] ~= '0' then
    redis.call('EXPIRE', KEYS[2], ARGV[11])
  end
end
-- The replay log keeps the TTL its first write gave it (the job's longest life plus the replay time), so ending
-- costs no EXPIRE on it; the state, which says whether the chat exists, goes after the replay time.
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'finished_at_ms', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('LREM', KEYS[4], 1, ARGV[5])
redis.call('ZREM', KEYS[5], ARGV[7])
local dropped = 0
if ARGV[8] ~= '' then
  -- Capped: the oldest records go first while the list is over either cap, each one counted.
  redis.call('RPUSH', KEYS[6], ARGV[8])
  local bytes = redis.call('INCRBY', KEYS[9], #ARGV[8])
  while redis.call('LLEN', KEYS[6]) > tonumber(ARGV[12]) or bytes > tonumber(ARGV[13]) do
    local oldest = redis.call('LPOP', KEYS[6])
    if not oldest then
      redis.call('SET', KEYS[9], 0)
      break
    end
    bytes = redis.call('DECRBY', KEYS[9], #oldest)
    dropped = dropped + 1
  end
  if dropped > 0 then
    redis.call('INCRBY', KEYS[10], dropped)
  end
end
-- Each TTL is set when its counter is created, not on every increment.
if redis.call('HINCRBY', KEYS[8], ARGV[4], 1) == 1 then
  redis.call('EXPIRE', KEYS[8], 120)
end
local charge = tonumber(ARGV[9]) - (tonumber(owner[4] or '0') or 0)
if charge > 0 or (charge < 0 and redis.call('EXISTS', KEYS[7]) == 1) then
  if redis.call('INCRBY', KEYS[7], charge) == charge then
    redis.call('EXPIRE', KEYS[7], 172800)
  end
end
return {length, dropped}
