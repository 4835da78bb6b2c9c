-- Elections (needs clock). A leadership is a hold of mode `l` at the lock key, like a mutex;
-- what the leader advertises lives in the leader record `leader`, a hash with the fields
-- `value`, `term` (the hold's fencing token) and `owner` (the hold's value at the lock key),
-- written by the script that grants the leadership and removed by the one that ends it, with
-- the lock key's expiry. Every change of leadership is announced with `leader` on the channel
-- of the same name. Waiting candidates' values wait in the hash `candidates` (member → value),
-- so that a release can hand the leadership over.
-- The leader record at `leader`: false when missing, else its value, term and owner. A key of
-- another type, or a hash that is not such a record, stops the script (`foreign`) unless
-- `lenient`, which returns nil for it instead.
local function leader_record(leader, lenient)
  local t = redis.call('TYPE', leader)['ok']
  if t == 'none' then return false end
  local f = false
  if t == 'hash' and redis.call('HLEN', leader) == 3 then
    f = redis.call('HMGET', leader, 'value', 'term', 'owner')
    if not (f[1] and f[2] and f[3] and string.match(f[2], '^%d+$')
        and string.match(f[3], '^%x+:l:%d+$')) then
      f = false
    end
  end
  if f then return f end
  if lenient then return nil end
  foreign(leader, 'is a ' .. t .. ' but not the leader record (a hash of value, term and owner) tumbler keeps for an election')
end
-- Makes `owner` (a hold value `ID:l:TOKEN`) the leader advertising `value`, its record living
-- `ms` like its hold, and announces it. The record there (if any) has been checked to have
-- just these three fields, so setting them replaces it.
local function elect(leader, owner, value, ms)
  redis.call('HSET', leader, 'value', value, 'term', string.match(owner, ':(%d+)$'), 'owner', owner)
  redis.call('PEXPIRE', leader, ms)
  redis.call('PUBLISH', leader, 'leader')
end
-- The leadership ended (resigned, cancelled, removed): its record goes, and that is announced.
local function abdicate(leader)
  redis.call('DEL', leader)
  redis.call('PUBLISH', leader, 'leader')
end
-- Drops the values of candidates no longer in `queue` (waiters pruned as gone).
local function prune_candidates(candidates, queue)
  for _, m in ipairs(redis.call('HKEYS', candidates)) do
    if not redis.call('ZSCORE', queue, m) then redis.call('HDEL', candidates, m) end
  end
end
