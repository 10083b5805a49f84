-- Revokes one stored entry (an API key) in a single step, so that no timeout can leave the
-- entry deleted while other nodes still hold it in their local tier: deletes the entry and its
-- pointer, removes it from its index set and publishes the invalidation, or does nothing.
-- KEYS[1]: the pointer to the entry (id -> hash); KEYS[2]: the entry (the record);
-- KEYS[3] (optional): the index set holding the id (the consumer's keys)
-- ARGV[1]: what the pointer must still hold (the hash), else someone revoked it already;
-- ARGV[2]: the member of KEYS[3] to remove; ARGV[3]: the invalidation channel;
-- ARGV[4]: the invalidation message
-- Returns: 1 when revoked, 0 when the pointer is gone or names another entry
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
if KEYS[3] then
  redis.call('SREM', KEYS[3], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
