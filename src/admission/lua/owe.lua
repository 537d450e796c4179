-- Adds to the budgets' spend what a replica settled while it could not reach Redis (it
-- fell back to its own limits), exactly once: the batch's member goes into each
-- account's `:owed` set first, so a retry of a batch whose answer was lost adds nothing.
--
-- KEYS: per account: its hash and its `:owed` set.
-- ARGV: the batch member, then per account: the amount (pico-USD) and the key expiry
--   (ms since the epoch).
local member = ARGV[1]
for i = 1, #KEYS / 2 do
  local b, o = KEYS[2 * i - 1], KEYS[2 * i]
  local expiry = ARGV[3 + 2 * (i - 1)]
  if redis.call('SADD', o, member) == 1 then
    redis.call('PEXPIREAT', o, expiry)
    -- An account without spend yet is seeded from the ledger at its next admission,
    -- and the ledger holds these requests too.
    if redis.call('HEXISTS', b, 'spent') == 1 then
      redis.call('HINCRBY', b, 'spent', ARGV[2 + 2 * (i - 1)])
      redis.call('PEXPIREAT', b, expiry)
    end
  end
end
return 1
