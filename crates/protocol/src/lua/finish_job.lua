-- finish_job.lua: ends a job with its last events, once. Appends and publishes the events (as one message, like
-- append_stream_events.lua), records the final status, shortens the state's life to the replay TTL, removes the
-- job from the worker's processing list and from the caller's active jobs, charges the tokens used to the
-- caller's daily budget, counts the outcome, and, for a job that failed for good, keeps a dead-letter record.
-- Fenced twice: only the worker and attempt recorded by start_job may end the job, and the events must land at
-- the length the writer expects. A job that already ended is left as it is, so a retried ending (its first
-- reply lost) never charges, counts or dead-letters twice.
--
-- KEYS[1]  job state (hash)                    KEYS[5]  the caller's active jobs (sorted set)
-- KEYS[2]  job replay log (list)               KEYS[6]  the dead-letter list
-- KEYS[3]  job event channel                   KEYS[7]  the caller's token budget for today
-- KEYS[4]  the worker's processing list        KEYS[8]  job outcome statistics bucket (hash)
-- ARGV[1]  worker id                           ARGV[7]  job id
-- ARGV[2]  attempt (the fence from start_job)  ARGV[8]  dead-letter record (JSON), or ''
-- ARGV[3]  replay TTL, s                       ARGV[9]  tokens used, charged to the budget
-- ARGV[4]  final status                        ARGV[10] the log length after the events (last seq)
-- ARGV[5]  the envelope exactly as claimed     ARGV[11] a TTL for the log, s, when this write creates it, or 0
-- ARGV[6]  now, ms since the epoch             ARGV[12…] event JSONs, in seq order
-- Returns  the replay log length; -1 when a fence refused the write; -2 when the job had already ended (nothing
--          changed either way).

local owner = redis.call('HMGET', KEYS[1], 'worker', 'attempt', 'status')
if owner[1] ~= ARGV[1] or owner[2] ~= ARGV[2] then
  return -1
end
if owner[3] ~= 'running' then
  return -2
end
local length = tonumber(ARGV[10])
if #ARGV >= 12 then
  length = redis.call('RPUSH', KEYS[2], unpack(ARGV, 12))
  if length ~= tonumber(ARGV[10]) then
    redis.call('RPOP', KEYS[2], #ARGV - 11)
    return -1
  end
  redis.call('PUBLISH', KEYS[3], table.concat(ARGV, '\n', 12))
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
if ARGV[8] ~= '' then
  redis.call('RPUSH', KEYS[6], ARGV[8])
end
-- Each TTL is set when its counter is created, not on every increment.
if redis.call('HINCRBY', KEYS[8], ARGV[4], 1) == 1 then
  redis.call('EXPIRE', KEYS[8], 120)
end
local used = tonumber(ARGV[9])
if used > 0 and redis.call('INCRBY', KEYS[7], used) == used then
  redis.call('EXPIRE', KEYS[7], 172800)
end
return length
