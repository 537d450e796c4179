-- Settles one request: releases its reservation (unless its lease already ran out) and
-- adds its actual cost to each budget's spend.
--
-- KEYS: per budget: its hash and its leases (as in admit.lua).
-- ARGV: lease member, reserved amount, actual cost (pico-USD), retry (0/1), then per
--   budget: the warning threshold (pico-USD) and the key expiry (ms since the epoch).
-- Returns the indices of the budgets whose spend crossed their warning threshold now.
--
-- A retry (the first call failed or went unanswered) adds the cost only where it still
-- removes the lease: if the first call did run, its lease is gone and nothing is
-- counted twice.
local member, amount, actual, retry = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local crossed = {}
for i = 1, #KEYS / 2 do
  local b, l = KEYS[2 * i - 1], KEYS[2 * i]
  local removed = amount ~= '0' and redis.call('ZREM', l, member) == 1
  if removed then
    redis.call('HINCRBY', b, 'reserved', '-' .. amount)
  end
  -- A period whose spend is not here (flushed or expired) is seeded from the ledger
  -- at the next admission, and the ledger holds this request too.
  if actual ~= '0' and (removed or not retry) and redis.call('HEXISTS', b, 'spent') == 1 then
    local before = big(redis.call('HGET', b, 'spent'))
    redis.call('HINCRBY', b, 'spent', actual)
    local after = big(redis.call('HGET', b, 'spent'))
    local threshold = big(ARGV[5 + 2 * (i - 1)])
    if gt(threshold, before) and ge(after, threshold) then table.insert(crossed, i) end
    redis.call('PEXPIREAT', b, ARGV[6 + 2 * (i - 1)])
  end
end
return crossed
