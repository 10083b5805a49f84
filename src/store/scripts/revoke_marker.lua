-- Records a revocation (a token id) and tells every node in a single step, so that no timeout
-- can leave a marker that nodes caching the token never hear of.
-- KEYS[1]: the revocation marker
-- ARGV[1]: its TTL in milliseconds (the token's remaining life); ARGV[2]: the invalidation
-- channel; ARGV[3]: the invalidation message
-- Returns: 1
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
