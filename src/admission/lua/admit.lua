-- Admits one request in one round trip: the key's rate window, then every budget of
-- the request (its key's and its team's), all or none.
--
-- KEYS: rate window now, rate window before, then per budget: its hash (spent,
--   reserved) and its leases (a sorted set of `id:amount` by lease expiry).
-- ARGV: now ms, rpm (-1: none), tpm (-1: none), prompt tokens, ms into the window,
--   window ms, amount (pico-USD), block free (0/1), lease member, lease expiry ms,
--   then per budget: limit (pico-USD), ledger seed (pico-USD, or '-' when not read),
--   key expiry (ms since the epoch).
-- Returns {0} admitted; {1, 'rpm'|'tpm', count now, count before} rate limited;
--   {2, budget index, spent, reserved} over budget; {3} a period's spend is unknown
--   and must be seeded from the ledger (nothing was counted: call again with seeds).
local now = tonumber(ARGV[1])
local rpm, tpm, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local elapsed, window = tonumber(ARGV[5]), tonumber(ARGV[6])
local amount, block_free = ARGV[7], ARGV[8] == '1'
local member, lease_until = ARGV[9], ARGV[10]
local budgets = (#KEYS - 2) / 2
local function arg(i, n) return ARGV[10 + 3 * (i - 1) + n] end

-- 1. Reservations whose lease ran out belonged to a replica that died: their room is
-- free again. A period's spend starts from the ledger, set once (the first replica's
-- seed wins; later seeds are ignored, so nothing is counted twice), with when it was
-- seeded (owe.lua needs it).
for i = 1, budgets do
  local b, l = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local expired = redis.call('ZRANGEBYSCORE', l, '-inf', now)
  if #expired > 0 then
    for _, m in ipairs(expired) do
      local amt = string.match(m, ':(%d+)$')
      if amt and amt ~= '0' then redis.call('HINCRBY', b, 'reserved', '-' .. amt) end
    end
    redis.call('ZREMRANGEBYSCORE', l, '-inf', now)
  end
  if redis.call('HEXISTS', b, 'spent') == 0 then
    local seed = arg(i, 2)
    if seed == '-' then return {3} end
    redis.call('HSET', b, 'spent', seed, 'seeded', now)
    redis.call('PEXPIREAT', b, arg(i, 3))
  end
end

-- 2. The sliding minute: this window's count plus the previous one's, weighted by how
-- much of it the sliding window still covers.
if rpm >= 0 or tpm >= 0 then
  local cur = redis.call('HMGET', KEYS[1], 'r', 't')
  local prev = redis.call('HMGET', KEYS[2], 'r', 't')
  local covered = (window - elapsed) / window
  local cr, ct = tonumber(cur[1]) or 0, tonumber(cur[2]) or 0
  local pr, pt = tonumber(prev[1]) or 0, tonumber(prev[2]) or 0
  if rpm >= 0 and cr + pr * covered + 1 > rpm then return {1, 'rpm', cr, pr} end
  if tpm >= 0 and ct + pt * covered + tokens > tpm then return {1, 'tpm', ct, pt} end
  redis.call('HINCRBY', KEYS[1], 'r', 1)
  if tokens > 0 then redis.call('HINCRBY', KEYS[1], 't', ARGV[4]) end
  redis.call('PEXPIRE', KEYS[1], 2 * window + 10000)
end

-- 3. Every budget has room, or none is touched. A free request passes a spent budget
-- unless free traffic is blocked.
local zero = amount == '0'
local amt = big(amount)
for i = 1, budgets do
  local v = redis.call('HMGET', KEYS[2 * i + 1], 'spent', 'reserved')
  local committed = add(big(v[1]), big(v[2]))
  local limit = big(arg(i, 1))
  local over
  if zero then over = block_free and ge(committed, limit) else over = gt(add(committed, amt), limit) end
  if over then return {2, i, v[1] or '0', v[2] or '0'} end
end
if not zero then
  for i = 1, budgets do
    local b, l = KEYS[2 * i + 1], KEYS[2 * i + 2]
    redis.call('HINCRBY', b, 'reserved', amount)
    redis.call('ZADD', l, lease_until, member)
    redis.call('PEXPIREAT', b, arg(i, 3))
    redis.call('PEXPIREAT', l, arg(i, 3))
  end
end
return {0}
