//! The Lua scripts the link and the backend run in Redis (`EVAL`).

/// Renews this node's heartbeat (`ARGV[1]`) to expire `ARGV[2]` ms from now by Redis's clock,
/// and the expiry of its member sets (`KEYS[2..]`). Returns 1 if the node had lapsed: it was
/// not listed, its heartbeat had expired, or a set was gone (evicted, expired).
pub(super) const HEARTBEAT: &str = "\
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local before = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local lapsed = 0
if (not before) or tonumber(before) <= now then lapsed = 1 end
for i = 2, #KEYS do
  if redis.call('PEXPIRE', KEYS[i], ARGV[2]) == 0 then lapsed = 1 end
end
return lapsed";

/// Forgets the nodes whose heartbeat expired, then counts (`ARGV[3]` = `count`) or lists the
/// members of room `ARGV[2]` over the live nodes (each member's id, then its data: the hash of a
/// node's members in a room maps ids to data).
pub(super) const CLUSTER_MEMBERS: &str = "\
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count, members = 0, {}
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. node .. ':' .. ARGV[2]
  if ARGV[3] == 'count' then
    count = count + redis.call('HLEN', key)
  else
    for _, field in ipairs(redis.call('HGETALL', key)) do members[#members + 1] = field end
  end
end
if ARGV[3] == 'count' then return count end
return members";
