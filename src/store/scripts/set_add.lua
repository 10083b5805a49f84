-- Adds a member to a set and makes sure the set lives at least as long as the member needs.
-- KEYS[1]: the set
-- ARGV[1]: the member
-- ARGV[2]: the minimum remaining TTL in milliseconds
-- Returns: 1
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
