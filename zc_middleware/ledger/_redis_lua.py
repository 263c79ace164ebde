"""The Lua the ``redis://`` ledger runs inside Redis: check-and-hold, settle, account writes, reads.

Every script touches one buyer's keys only, all named with the same ``{hash tag}``,
so each runs atomically on the one node that owns that buyer, standalone or in a
cluster. The plan arithmetic stays in Python (:mod:`.rules`, :mod:`..periods`):
the caller passes the plan's current limits, the period bounds for its clock and
the account it expects, and the scripts only compare and increment.

Keys: ``KEYS[1]`` the account hash (``plan``, ``anchor``, ``expires``, ``status``),
``KEYS[2]`` the rows hash (``s:<meter>`` period start, ``e:<meter>`` period end or
``""`` for never, ``u:<meter>`` used, holds included), ``KEYS[3]`` the leases: a sorted
set of ``<id>|<amount>|<period start>|<meter>`` scored by when the lease ends, on the
server's clock. The account hash also holds ``version``, the last entitlement write applied, and
``KEYS[4]`` (entitlement writes only) is the plan history: a list of the last :data:`HISTORY_KEPT`
writes applied, oldest first, each a JSON array ``[at, kid, version, key, change]``. Numbers that
are written arrive as strings and are written with ``HSET``/``HINCRBY`` as given: Redis would
format a Lua number with 14 digits only.
"""

from __future__ import annotations

__all__ = ["ADJUST", "ENTITLE", "HISTORY", "HISTORY_KEPT", "READ", "RESERVE", "STORE"]

#: How many entitlement writes a buyer's history keeps. The last version applied is kept apart (in
#: the account hash) and never trimmed: a write replayed after its entry was trimmed is at most that
#: version, so it is still ignored (``stale`` rather than ``duplicate``) and changes nothing.
HISTORY_KEPT = 100

# Leases are timed on the server's clock (``TIME``), not the caller's: every host agrees on when a
# lease ends whatever its own clock says, and a test's injected plan clock never expires one. A
# script may write after reading ``TIME`` since Redis 5, which replicates a script by its effects.
_SWEEP = """
local t = redis.call('TIME')
local server_now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ended = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', server_now, 'LIMIT', 0, 128)
for _, lease in ipairs(ended) do
  local amount, start, meter = string.match(lease, '^[^|]*|([^|]*)|([^|]*)|(.*)$')
  if redis.call('HGET', KEYS[2], 's:' .. meter) == start then
    if redis.call('HINCRBY', KEYS[2], 'u:' .. meter, '-' .. amount) < 0 then
      redis.call('HSET', KEYS[2], 'u:' .. meter, '0')
    end
  end
  redis.call('ZREM', KEYS[3], lease)
end
"""

#: ARGV: now, plan, anchor, create ("1": the account a first-time buyer gets), lease id, lease
#: seconds, then per meter: meter, amount, limit ("" unlimited), period start, period end ("" never).
#: Returns ``{"ok", start...}``, ``{"stale", plan, anchor}`` (the stored account is another one;
#: ``""`` when there is none), or ``{"refused", reason, meter index, period end}``.
RESERVE = (
    """
local now = tonumber(ARGV[1])
local account = redis.call('HMGET', KEYS[1], 'plan', 'anchor', 'expires', 'status')
if not account[1] then
  if ARGV[4] ~= '1' then return {'stale', '', ''} end
elseif account[1] ~= ARGV[2] or account[2] ~= ARGV[3] then
  return {'stale', account[1], account[2]}
elseif account[4] == 'capped' then
  return {'refused', 'spend_cap_reached', '0', ''}
elseif account[4] == 'expired' or (account[3] ~= '' and now >= tonumber(account[3])) then
  return {'refused', 'plan_expired', '0', ''}
end
if now < tonumber(ARGV[3]) then return {'refused', 'plan_expired', '0', ''} end
"""
    + _SWEEP
    + """
local n = (#ARGV - 6) / 5
local starts, ends, fresh = {}, {}, {}
for i = 1, n do
  local b = 6 + (i - 1) * 5
  local meter, amount, limit = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3]
  local row = redis.call('HMGET', KEYS[2], 's:' .. meter, 'e:' .. meter, 'u:' .. meter)
  local used = 0
  if row[1] and (row[2] == '' or now < tonumber(row[2])) then
    starts[i], ends[i], used = row[1], row[2], tonumber(row[3])
  else
    starts[i], ends[i], fresh[i] = ARGV[b + 4], ARGV[b + 5], true
  end
  if limit ~= '' and used + amount > tonumber(limit) then
    return {'refused', 'usage_exhausted', tostring(i), ends[i]}
  end
end
if not account[1] then
  redis.call('HSET', KEYS[1], 'plan', ARGV[2], 'anchor', ARGV[3], 'expires', '', 'status', 'active')
end
local until_ = server_now + tonumber(ARGV[6])
local result = {'ok'}
for i = 1, n do
  local b = 6 + (i - 1) * 5
  local meter, amount = ARGV[b + 1], ARGV[b + 2]
  if fresh[i] then
    redis.call('HSET', KEYS[2], 's:' .. meter, starts[i], 'e:' .. meter, ends[i], 'u:' .. meter, amount)
  else
    redis.call('HINCRBY', KEYS[2], 'u:' .. meter, amount)
  end
  redis.call('ZADD', KEYS[3], until_, ARGV[5] .. '|' .. amount .. '|' .. starts[i] .. '|' .. meter)
  result[i + 1] = starts[i]
end
return result
"""
)

#: ARGV per debit: lease, meter, period start, used - held, used. A lease still held gives back the
#: difference; one that already ended (and was given back) bills what was used.
_ADJUST_FROM = """
for i = FIRST, #ARGV, 5 do
  local held = redis.call('ZREM', KEYS[3], ARGV[i])
  local delta = ARGV[i + 4]
  if held == 1 then delta = ARGV[i + 3] end
  if delta ~= '0' and redis.call('HGET', KEYS[2], 's:' .. ARGV[i + 1]) == ARGV[i + 2] then
    if redis.call('HINCRBY', KEYS[2], 'u:' .. ARGV[i + 1], delta) < 0 then
      redis.call('HSET', KEYS[2], 'u:' .. ARGV[i + 1], '0')
    end
  end
end
"""
ADJUST = _ADJUST_FROM.replace("FIRST", "1") + "return 0\n"
#: ADJUST of a journaled write, run only if the marker KEYS[4] was not set (it is then set, for
#: ARGV[1] seconds, before the debits in ARGV[2:]); 1 if it ran
ADJUST_ONCE = (
    "if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', tonumber(ARGV[1])) then return 0 end\n"
    + _ADJUST_FROM.replace("FIRST", "2")
    + "return 1\n"
)

#: ARGV: plan, anchor, expires ("" never), status, reset ("1": fresh allowances, no holds).
STORE = """
redis.call('HSET', KEYS[1], 'plan', ARGV[1], 'anchor', ARGV[2], 'expires', ARGV[3], 'status', ARGV[4])
if ARGV[5] == '1' then redis.call('DEL', KEYS[2], KEYS[3]) end
return 0
"""

#: Returns the account (plan, anchor, expires, status; ``false`` when none) and the rows hash, flat,
#: after giving back ended leases.
READ = (
    _SWEEP
    + """
return {redis.call('HMGET', KEYS[1], 'plan', 'anchor', 'expires', 'status'), redis.call('HGETALL', KEYS[2])}
"""
)

#: ARGV: idempotency key, version, the account the caller decided from (plan, anchor, expires,
#: status; all ``""`` when none), the account to store (the same four), reset ("1": fresh allowances,
#: no holds), the history entry, how many entries to keep. Returns ``{"duplicate"}`` or ``{"stale"}``
#: (nothing changed), ``{"changed"}`` (the account is not the one decided from: decide again) or
#: ``{"applied"}``. A manual plan assignment (:data:`STORE`) leaves ``version`` and the history alone.
ENTITLE = """
-- versions are compared as decimal strings: a Lua number is exact only up to 2^53
local function at_most(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then return na end
  if #a ~= #b then return (#a < #b) ~= na end
  return a == b or ((a < b) ~= na)
end
for _, entry in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
  if cjson.decode(entry)[4] == ARGV[1] then return {'duplicate'} end
end
local account = redis.call('HMGET', KEYS[1], 'plan', 'anchor', 'expires', 'status', 'version')
if account[5] and at_most(ARGV[2], account[5]) then return {'stale'} end
for i = 1, 4 do
  if (account[i] or '') ~= ARGV[i + 2] then return {'changed'} end
end
redis.call('HSET', KEYS[1], 'plan', ARGV[7], 'anchor', ARGV[8], 'expires', ARGV[9], 'status', ARGV[10],
  'version', ARGV[2])
if ARGV[11] == '1' then redis.call('DEL', KEYS[2], KEYS[3]) end
redis.call('RPUSH', KEYS[4], ARGV[12])
redis.call('LTRIM', KEYS[4], -tonumber(ARGV[13]), -1)
return {'applied'}
"""

#: The plan history (``KEYS[4]``), oldest first.
HISTORY = """
return redis.call('LRANGE', KEYS[4], 0, -1)
"""
