-- measure.lua: one stream's lag for one consumer group, measured atomically,
-- and entries that vanished before the group saw them counted exactly once.
--
-- KEYS[1] stream key
-- ARGV[1] group name
-- ARGV[2] count cap: at most this many entries are walked to count the lag
-- ARGV[3] "1" to count unseen removals and correct the group's entries-read
--         counter (XGROUP SETID ... ENTRIESREAD), "0" to only observe
--
-- Reply: {status, lag, pending, oldest_ms, lost, now_ms, last_delivered_id,
--         next_id, exact}
--   status  0 ok, 1 no stream (or not a stream), 2 stream without the group
--   lag     entries in the stream after the group's last-delivered-id
--   pending entries delivered to the group, not acknowledged
--   oldest_ms  id time of the oldest entry not yet acknowledged (pending or
--              not yet delivered), -1 when there is none
--   lost    entries counted now as removed before the group saw them
--   now_ms  the Redis server's clock (TIME), so ages ignore client skew
--   exact   1 when lag was counted or is known exactly, 0 when it is
--           Redis's own figure (a backlog larger than the count cap)
--
-- Why: Redis computes XINFO GROUPS lag as entries-added minus the group's
-- entries-read. When entries are trimmed before the group read them, the
-- reader skips them but entries-read only grows by what it delivers, so
-- Redis's lag stays too high forever (7.0: "lag 89" for a stream of 20
-- entries). The difference between Redis's lag and the counted lag is
-- exactly the number of entries that vanished unseen. This script counts it
-- and sets entries-read to the true value in the same atomic step, so a
-- second replica, or the next pass, finds nothing left to count.

local function field(arr, name)
  for i = 1, #arr, 2 do
    if arr[i] == name then return arr[i + 1] end
  end
  return nil
end

-- Stream ids compare as (ms, seq) pairs of unsigned decimal integers.
local function part_cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
local function id_cmp(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  local c = part_cmp(am, bm)
  if c ~= 0 then return c end
  return part_cmp(as, bs)
end
local function id_ms(id)
  return tonumber(string.match(id, '^(%d+)'))
end

local key, group = KEYS[1], ARGV[1]
local cap = tonumber(ARGV[2])
local correct = ARGV[3] == '1'

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if redis.call('TYPE', key).ok ~= 'stream' then
  return {1, 0, 0, -1, 0, now, '', '', 1}
end

local s = redis.call('XINFO', 'STREAM', key)
local len = field(s, 'length')
local added = field(s, 'entries-added')
local last = field(s, 'last-generated-id')
local first = field(s, 'recorded-first-entry-id')
if not first then
  -- Redis 6.2 has no recorded-first-entry-id, entries-added or
  -- entries-read: the lag is still counted; unseen trims are not.
  local fe = field(s, 'first-entry')
  first = (fe and fe[1]) or '0-0'
end

local g = nil
for _, grp in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  if field(grp, 'name') == group then
    g = grp
    break
  end
end
if not g then
  -- The reader creates the group at 0: everything in the stream is unread.
  local oldest = -1
  if len > 0 then oldest = id_ms(first) end
  return {2, len, 0, oldest, 0, now, '', len > 0 and first or '', 1}
end

local gid = field(g, 'last-delivered-id')
local read = field(g, 'entries-read') -- false when Redis lost track of it
if not added then read = false end
local rlag = field(g, 'lag')          -- false after deletes in the unread range
local pending = field(g, 'pending')
-- Redis's view of the lag, from the group's counter.
local base = nil
if read then base = added - read end

-- At most this many entries can follow the last delivered id when that id
-- is not older than the first entry (the first entry itself is not after it).
local upper = len - 1
local lag, exact, nextid = 0, true, nil
if len == 0 or id_cmp(gid, last) >= 0 then
  lag = 0
elseif id_cmp(gid, first) < 0 then
  -- Every entry left in the stream is newer than the last delivered one.
  lag, nextid = len, first
elseif base and base >= cap and base <= upper then
  -- A large backlog that Redis's counter can account for: walking it every
  -- pass would cost too much. Any unseen removal in it is found once the
  -- backlog is below the cap.
  lag, exact = base, false
  if rlag then lag = rlag end
  local r = redis.call('XRANGE', key, '(' .. gid, '+', 'COUNT', 1)
  if r[1] then nextid = r[1][1] end
else
  local want = cap
  if base and base + 1 < cap then want = base + 1 end
  local r = redis.call('XRANGE', key, '(' .. gid, '+', 'COUNT', want)
  if r[1] then nextid = r[1][1] end
  if #r < want or (base and #r > base) then
    -- Fewer than asked: that is all of them. More than Redis's own figure:
    -- the counter is off upwards; count what is there (up to the cap).
    lag = #r
    exact = #r < want
  else
    -- At least cap entries, and Redis's figure is missing or more than
    -- the stream can hold: report the most it can hold.
    lag, exact = math.min(base or rlag or upper, upper), false
  end
end

local lost = 0
if correct and read then
  if exact then
    lost = added - read - lag
  elseif base > upper then
    -- Not counted to the end, but no more than upper entries are unread.
    lost = base - upper
  end
  if lost > 0 then
    redis.call('XGROUP', 'SETID', key, group, gid, 'ENTRIESREAD', read + lost)
  else
    lost = 0
  end
end

local oldest = -1
if pending > 0 then
  local p = redis.call('XPENDING', key, group)
  if p[2] then oldest = id_ms(p[2]) end
end
if lag > 0 and nextid then
  local m = id_ms(nextid)
  if oldest < 0 or m < oldest then oldest = m end
end

return {0, lag, pending, oldest, lost, now, gid, nextid or '', exact and 1 or 0}
