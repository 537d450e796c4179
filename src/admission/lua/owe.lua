-- Adds to the budgets' spend what a replica settled while it could not reach Redis (it
-- fell back to its own limits), exactly once: the batch's member goes into each
-- account's `:owed` set first, so a retry of a batch whose answer was lost adds nothing.
--
-- KEYS: per account: its hash and its `:owed` set.
-- ARGV: the batch member, then per account: the amount (pico-USD), the key expiry and
--   when the first of the amount was settled (both ms since the epoch).
--
-- An account seeded from the ledger after that (Redis lost it in the outage, or first
-- saw the period after it) already counts these requests, which the ledger holds; so
-- does one not seeded yet, at its next admission. Only older accounts get the amount.
local member = ARGV[1]
for i = 1, #KEYS / 2 do
  local b, o = KEYS[2 * i - 1], KEYS[2 * i]
  local amount, expiry, since = ARGV[3 * i - 1], ARGV[3 * i], tonumber(ARGV[3 * i + 1])
  if redis.call('SADD', o, member) == 1 then
    redis.call('PEXPIREAT', o, expiry)
    local seeded = redis.call('HGET', b, 'seeded')
    if redis.call('HEXISTS', b, 'spent') == 1 and (not seeded or tonumber(seeded) < since) then
      redis.call('HINCRBY', b, 'spent', amount)
      redis.call('PEXPIREAT', b, expiry)
    end
  end
end
return 1
