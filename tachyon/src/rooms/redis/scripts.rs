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

/// The history scripts' first lines: Redis's clock, and dropping a room's oldest messages while
/// any bound is exceeded. A room's history is three keys: the stream (`stream`, entry `0-{offset}`
/// holding `e`, the envelope), the meta hash (`meta`: `epoch`, `offset` the newest, `bytes` the
/// sum of the messages' lengths) and an index (`index`, a list with one `"{length} {ms}"` per
/// entry, oldest first). Offsets are contiguous, so the oldest kept is `last - LLEN + 1`: the
/// bounds are checked on the index's small items, and the stream is cut with one `XTRIM MINID`.
/// Each entry is dropped once, so the work is bounded by what was added.
const HISTORY_PRELUDE: &str = "\
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local function trim(stream, meta, index, last, bytes, max_messages, max_bytes, max_age)
  local len = redis.call('LLEN', index)
  local dropped = 0
  while len > 0 do
    if len <= max_messages and bytes <= max_bytes then
      if max_age <= 0 then break end
      local at = tonumber(string.match(redis.call('LINDEX', index, 0), ' (%d+)$'))
      if at >= now - max_age then break end
    end
    bytes = bytes - tonumber(string.match(redis.call('LPOP', index), '^(%d+)'))
    len = len - 1
    dropped = dropped + 1
  end
  if dropped > 0 then
    redis.call('HSET', meta, 'bytes', bytes)
    redis.call('XTRIM', stream, 'MINID', '0-' .. string.format('%d', last - len + 1))
  end
  return len
end
";

/// Records a broadcast in a room's history (`KEYS`: stream, meta, index) and publishes it:
/// takes the room's next offset (starting a new epoch, `ARGV[3]`, if the history is gone), puts
/// the position in place of every occurrence of the placeholder's text (`ARGV[2]`, the same
/// length) in the envelope (`ARGV[1]`), appends it, trims, renews the keys' expiry (`ARGV[7]`
/// ms) and publishes on `ARGV[8]`. `ARGV[4..6]`: the bounds in messages, bytes and ms (0:
/// none); `ARGV[9]`: the envelope's header length. Returns the position: `{epoch, offset}`.
const RECORD_BODY: &str = "\
local stream, meta, index = KEYS[1], KEYS[2], KEYS[3]
local envelope, placeholder = ARGV[1], ARGV[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', stream, index)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0, 'bytes', 0)
end
local offset = redis.call('HINCRBY', meta, 'offset', 1)
local position = epoch .. '-' .. string.format('%016x', offset)
local parts, from = {}, 1
while true do
  local s, e = string.find(envelope, placeholder, from, true)
  if not s then break end
  parts[#parts + 1] = string.sub(envelope, from, s - 1)
  parts[#parts + 1] = position
  from = e + 1
end
parts[#parts + 1] = string.sub(envelope, from)
envelope = table.concat(parts)
local n = #envelope - tonumber(ARGV[9])
redis.call('XADD', stream, '0-' .. string.format('%d', offset), 'e', envelope)
redis.call('RPUSH', index, n .. ' ' .. now)
local bytes = redis.call('HINCRBY', meta, 'bytes', n)
trim(stream, meta, index, offset, bytes, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
redis.call('PEXPIRE', stream, ARGV[7])
redis.call('PEXPIRE', meta, ARGV[7])
redis.call('PEXPIRE', index, ARGV[7])
redis.call('PUBLISH', ARGV[8], envelope)
return {epoch, offset}";

/// Reads a room's history (`KEYS`: stream, meta, index) after position `ARGV[1]` (epoch, empty
/// for none) and `ARGV[2]` (offset), at most `ARGV[3]` messages, after trimming to the bounds
/// `ARGV[4..6]`. Returns `{'ok', envelopes...}` when every message after the position is there,
/// otherwise `{why}` (`none`: no history; `unasked`: no position given; `epoch`, `future`,
/// `expired`, also when an entry is missing, evicted), followed by the newest envelope if
/// `ARGV[7]` is `1` (a latest-value room).
const READ_BODY: &str = "\
local stream, meta, index = KEYS[1], KEYS[2], KEYS[3]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {'none'} end
local last = tonumber(redis.call('HGET', meta, 'offset'))
local bytes = tonumber(redis.call('HGET', meta, 'bytes') or '0')
local kept = trim(stream, meta, index, last, bytes, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
local function refuse(why)
  if ARGV[7] ~= '1' then return {why} end
  local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if not newest then return {why} end
  return {why, newest[2][2]}
end
if ARGV[1] == '' then return refuse('unasked') end
if ARGV[1] ~= epoch then return refuse('epoch') end
local since = tonumber(ARGV[2])
if since > last then return refuse('future') end
if since + 1 < last - kept + 1 then return refuse('expired') end
local from = '0-' .. string.format('%d', since + 1)
local entries = redis.call('XRANGE', stream, from, '+', 'COUNT', ARGV[3])
if #entries < math.min(last - since, tonumber(ARGV[3])) then return refuse('expired') end
local reply = {'ok'}
for _, entry in ipairs(entries) do reply[#reply + 1] = entry[2][2] end
return reply";

/// A script and its SHA-1, for `EVALSHA`: the link loads it on every connection.
#[derive(Debug)]
pub(super) struct Lua {
    pub(super) source: String,
    pub(super) hash: String,
}

impl Lua {
    fn new(source: String) -> Self {
        let hash = redis::Script::new(&source).get_hash().to_owned();
        Self { source, hash }
    }
}

/// [`RECORD_BODY`] with its prelude, run once per recorded broadcast (by `EVALSHA`).
pub(super) static RECORD: std::sync::LazyLock<Lua> =
    std::sync::LazyLock::new(|| Lua::new(format!("{HISTORY_PRELUDE}{RECORD_BODY}")));

/// [`READ_BODY`] with its prelude, run once per resuming join (by `EVAL`).
pub(super) static READ: std::sync::LazyLock<Lua> =
    std::sync::LazyLock::new(|| Lua::new(format!("{HISTORY_PRELUDE}{READ_BODY}")));
