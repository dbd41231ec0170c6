/**
 * The Lua behind {@link SharedOutboundLimiter}: one script run per pacing decision, so every node sharing a
 * provider key reads and changes one budget atomically, in Redis time (`TIME`).
 *
 * KEYS[1] is a hash holding the budget of the key's two quotas (requests, tokens: fields prefixed `r` and
 * `t`) and the cooldown of a 429 (`b`, until when); KEYS[2] is a sorted set of the
 * calls in flight (leases, scored by when they expire), whose details (`L<id>`: tokens, generations, whether
 * each was sent while learning, when it was sent) sit in the hash; KEYS[3] and KEYS[4] hold, per quota, the
 * calls of the window answered after the earliest moment the provider's reset can have come ("id:units",
 * scored by when). All share the key's `{hash tag}`. A node that dies with calls in flight holds their
 * budget only until their leases expire.
 *
 * Per quota (the same rules as the one-process `OutboundLimiter`): `k` tracked (-1 unknown until an answer,
 * 0 when the provider does not report it, 1 tracked), `l` limit, `m` remaining in this window, `z` when the
 * window resets (-1 from a reset until the new window's first answer), `o` the earliest the provider's
 * reset can come, `g` the window's generation, `p` learning (before the first answer, at most the learning
 * concurrency goes at once), `q` calls in flight while learning, `f` units in flight, `h` whether the
 * provider's headers were ever seen (a configured limit alone restarts its window by the clock). At a
 * reset the whole limit is back, less the units in flight and the calls answered since `o`.
 *
 * Acquire: ARGV = 'a', tokens, learning concurrency, configured requests, configured tokens, configured
 * window ms, lease ms, default reset ms, the lease id (the caller's, so a reply lost to a timeout can still
 * be given back). Returns { 1, 0, 0, remaining requests, remaining tokens, whether the provider reports
 * each quota (-1 not yet known, 0 no, 1 yes) } or { 0, 0, ms to wait (0: until an answer frees budget), ... }.
 *
 * Done: ARGV = 'd', lease id, how it ended (1 answered, 0 failed without an answer, -1 never sent), then
 * per quota (requests, tokens) limit, remaining, reset ms ('' when not reported), then the cooldown ms of a
 * 429 (0 for none), configured requests, configured tokens, default reset ms.
 */

export const PACING_LUA = `
local h, leases = KEYS[1], KEYS[2]
local tails = {r = KEYS[3], t = KEYS[4]}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local FIELDS = {'k', 'l', 'm', 'z', 'o', 'g', 'p', 'q', 'f', 'h'}
local names = {'b'}
for _, d in ipairs({'r', 't'}) do
  for _, f in ipairs(FIELDS) do names[#names + 1] = d .. f end
end
local raw = redis.call('HMGET', h, unpack(names))
local s = {}
for i, name in ipairs(names) do s[name] = tonumber(raw[i]) end
for _, d in ipairs({'r', 't'}) do
  if s[d .. 'k'] == nil then s[d .. 'k'] = -1 end
  if s[d .. 'p'] == nil then s[d .. 'p'] = 1 end
end
for _, name in ipairs(names) do if s[name] == nil then s[name] = 0 end end

local function opt(v) if v == nil or v == '' then return nil end return tonumber(v) end

-- A quota known from configuration alone starts tracked, with its whole limit.
local function configure(d, cfg, window)
  if cfg > 0 and s[d .. 'k'] == -1 then
    s[d .. 'k'] = 1; s[d .. 'l'] = cfg; s[d .. 'm'] = cfg; s[d .. 'z'] = now + window; s[d .. 'p'] = 0
    s[d .. 'o'] = now
  end
end

local function roll(d, window)
  local z = s[d .. 'z']
  if s[d .. 'k'] == 1 and s[d .. 'p'] == 0 and z ~= -1 and now >= z then
    s[d .. 'g'] = s[d .. 'g'] + 1
    local late = 0
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', tails[d], s[d .. 'o'], '+inf')) do
      late = late + tonumber(string.match(member, ':(.+)$'))
    end
    redis.call('DEL', tails[d])
    s[d .. 'm'] = s[d .. 'l'] - late
    s[d .. 'z'] = (s[d .. 'h'] == 0) and (now + window) or -1
    s[d .. 'o'] = now
  end
end

-- After a reset the new window's first answer says when it resets; with no call of it in flight (on any
-- node) none will, so it is assumed to reset the default time from now.
local function expect_reset(d, fallback)
  if s[d .. 'z'] == -1 and s[d .. 'f'] <= 0 then s[d .. 'z'] = now + fallback end
end

local function fits(d, units, cap)
  if s[d .. 'k'] == 0 then return true end
  if s[d .. 'p'] == 1 then return s[d .. 'q'] < cap end
  return s[d .. 'm'] - s[d .. 'f'] >= math.min(units, s[d .. 'l'])
end

local function wait_until(d, units)
  if s[d .. 'k'] ~= 1 or s[d .. 'p'] == 1 or s[d .. 'z'] == -1
    or s[d .. 'm'] - s[d .. 'f'] >= math.min(units, s[d .. 'l']) then
    return now
  end
  return s[d .. 'z']
end

local function remaining(d)
  if s[d .. 'k'] == 1 and s[d .. 'p'] == 0 then return s[d .. 'm'] end
  return -1
end

-- Undoes a lease's hold on quota d: its units in flight, and its place among the learning calls.
local function release(d, units, gen, learner)
  s[d .. 'f'] = math.max(0, s[d .. 'f'] - units)
  if learner == 1 and gen == s[d .. 'g'] then s[d .. 'q'] = math.max(0, s[d .. 'q'] - 1) end
end

-- A call answered now may have been counted in the provider's next window: kept until the reset.
local function over(d, units, id)
  if units > 0 and s[d .. 'h'] == 1 and now >= s[d .. 'o'] then
    redis.call('ZADD', tails[d], now, id .. ':' .. units)
    redis.call('ZREMRANGEBYSCORE', tails[d], '-inf', '(' .. s[d .. 'o'])
  end
end

local function learn(d, units, gen, sent, id, ended, lim, rem, reset, cfg, fallback)
  if ended < 0 then return end
  if gen ~= s[d .. 'g'] then
    -- A call of an earlier window: the provider may have counted it in this one.
    if s[d .. 'p'] == 0 then s[d .. 'm'] = s[d .. 'm'] - units end
    return
  end
  if lim == nil and rem == nil and reset == nil then
    if ended == 1 and s[d .. 'k'] == -1 then s[d .. 'k'] = 0 end
    if s[d .. 'p'] == 0 then
      -- No figures: the provider may still have counted the call.
      s[d .. 'm'] = s[d .. 'm'] - units
      if s[d .. 'z'] == -1 then s[d .. 'z'] = now + fallback end
      over(d, units, id)
    end
    return
  end
  s[d .. 'k'] = 1; s[d .. 'h'] = 1
  if lim ~= nil then s[d .. 'l'] = lim end
  if cfg > 0 and (s[d .. 'l'] == 0 or cfg < s[d .. 'l']) then s[d .. 'l'] = cfg end
  if reset ~= nil then s[d .. 'o'] = math.max(s[d .. 'o'], sent + reset) end
  if s[d .. 'p'] == 1 then
    s[d .. 'p'] = 0
    s[d .. 'm'] = math.min(rem or s[d .. 'l'], s[d .. 'l'])
    s[d .. 'z'] = now + (reset or fallback)
    over(d, units, id)
    return
  end
  if rem ~= nil then s[d .. 'm'] = math.min(s[d .. 'm'], rem) end
  if s[d .. 'z'] == -1 then s[d .. 'z'] = now + (reset or fallback)
  elseif reset ~= nil then s[d .. 'z'] = math.max(s[d .. 'z'], now + reset) end
  over(d, units, id)
end

local function split(rec)
  local v = {}
  for part in string.gmatch(rec, '[^,]+') do v[#v + 1] = tonumber(part) end
  return v
end

-- Leases past their time: their calls' node is gone or never said how they ended.
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
for _, id in ipairs(expired) do
  local rec = redis.call('HGET', h, 'L' .. id)
  if rec then
    local v = split(rec)
    release('r', 1, v[2], v[4]); release('t', v[1], v[3], v[5])
    redis.call('HDEL', h, 'L' .. id)
  end
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', leases, '-inf', now) end

local reply
if ARGV[1] == 'a' then
  local tokens, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
  local window, lease, fallback = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
  configure('r', tonumber(ARGV[4]), window); configure('t', tonumber(ARGV[5]), window)
  roll('r', window); roll('t', window)
  if now < s.b then
    reply = {0, 0, s.b - now, remaining('r'), remaining('t')}
  elseif fits('r', 1, cap) and fits('t', tokens, cap) then
    local rp = (s.rp == 1 and s.rk ~= 0) and 1 or 0
    local tp = (s.tp == 1 and s.tk ~= 0) and 1 or 0
    s.rf = s.rf + 1; s.tf = s.tf + tokens
    s.rq = s.rq + rp; s.tq = s.tq + tp
    local id = ARGV[9]
    redis.call('HSET', h, 'L' .. id, tokens .. ',' .. s.rg .. ',' .. s.tg .. ',' .. rp .. ',' .. tp .. ',' .. now)
    redis.call('ZADD', leases, now + lease, id)
    reply = {1, 0, 0, remaining('r'), remaining('t'), s.rk, s.tk}
  else
    expect_reset('r', fallback); expect_reset('t', fallback)
    local at = math.max(wait_until('r', 1), wait_until('t', tokens))
    reply = {0, 0, at - now, remaining('r'), remaining('t')}
  end
else
  local id, ended = ARGV[2], tonumber(ARGV[3])
  local block, fallback = tonumber(ARGV[10]), tonumber(ARGV[13])
  local rec = redis.call('HGET', h, 'L' .. id)
  if rec then
    local v = split(rec)
    redis.call('HDEL', h, 'L' .. id)
    redis.call('ZREM', leases, id)
    release('r', 1, v[2], v[4]); release('t', v[1], v[3], v[5])
    learn('r', 1, v[2], v[6], id, ended, opt(ARGV[4]), opt(ARGV[5]), opt(ARGV[6]), tonumber(ARGV[11]), fallback)
    learn('t', v[1], v[3], v[6], id, ended, opt(ARGV[7]), opt(ARGV[8]), opt(ARGV[9]), tonumber(ARGV[12]), fallback)
  end
  if block > 0 then s.b = math.max(s.b, now + block) end
  reply = {1, 0, 0, remaining('r'), remaining('t')}
end

local flat = {}
for _, name in ipairs(names) do
  flat[#flat + 1] = name; flat[#flat + 1] = s[name]
end
redis.call('HSET', h, unpack(flat))
redis.call('PEXPIRE', h, 600000)
redis.call('PEXPIRE', leases, 600000)
redis.call('PEXPIRE', tails.r, 600000)
redis.call('PEXPIRE', tails.t, 600000)
return reply
`;
