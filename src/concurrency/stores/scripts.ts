/**
 * The Lua behind {@link RedisRateLimitStore}, generated once per limiter for its policies (windows and
 * limits inlined, so a call sends only the key and the charges). One script call covers every policy of a
 * key: it reads the time from Redis (`TIME`), brings each policy's state up to that time, decides, and
 * writes only when every policy admits the charge, so a refused call changes no counter. The algorithms
 * mirror the memory store (memory-store.ts).
 *
 * KEYS[i] holds policy i's state; sliding-log policies also have a sorted set (members "id:cost", scored
 * by time) after the n state keys. All share the limited key's `{hash tag}`, so one Cluster slot.
 *
 * State per algorithm (a key per policy, each expiring when its state is as good as fresh):
 * - fixed window: a hash { <window start>: count }, holding the current window only;
 * - sliding window: a hash { w: window start, c: current count, p: previous count };
 * - sliding log: a hash { s: sum in the window, d: last entry id } and the sorted set;
 * - token bucket: a hash { u: used (capacity - tokens), t: last refill };
 * - GCRA: a string, the theoretical arrival time.
 */
import type { CompiledPolicy } from './store.ts';

/** A Lua number literal. */
function num(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toPrecision(17);
}

/** Lua expression adding `amount` to hash field `field` of `key`, evaluating to the new value. */
function incr(key: string, field: string, amount: string): string {
  return `incr(${key}, ${field}, ${amount})`;
}

/**
 * HINCRBY for whole charges (the cheap, common case); HINCRBYFLOAT for fractions, and for a field that
 * holds one already (HINCRBY refuses it).
 */
const INCR = `
local function incr(k, f, a)
  if a % 1 == 0 then
    local v = redis.pcall('HINCRBY', k, f, a)
    if type(v) == 'number' then return v end
  end
  return tonumber(redis.call('HINCRBYFLOAT', k, f, a))
end`;

/** The sorted set KEYS index of each sliding-log policy (0 when none). */
function logKeys(policies: readonly CompiledPolicy[]): number[] {
  let next = policies.length;
  return policies.map((p) => (p.code === 2 ? ++next : 0));
}

/** Reads policy `i`'s state into locals and computes `r<i>`, the remaining quota before the charge. */
function read(p: CompiledPolicy, i: number, z: number): string {
  const W = num(p.windowMs);
  const L = num(p.limit);
  const K = `KEYS[${i}]`;
  switch (p.code) {
    case 0:
      // The count is charged at once (one HINCRBY is the whole admitted path) and given back below if
      // any policy refuses; nobody sees the difference, the script being atomic.
      return `
local ws${i} = now - now % ${W}
local n${i}
local new${i} = false
if c${i} > 0 then
  n${i} = ${incr(K, `ws${i}`, `c${i}`)}
  new${i} = n${i} == c${i}
  n${i} = n${i} - c${i}
else
  n${i} = tonumber(redis.call('HGET', ${K}, ws${i})) or 0
end
local r${i} = ${L} - n${i}`;
    case 1:
      return `
local ws${i} = now - now % ${W}
local h${i} = redis.call('HMGET', ${K}, 'w', 'c', 'p')
local w${i} = tonumber(h${i}[1]) or 0
local cu${i} = tonumber(h${i}[2]) or 0
local pr${i} = tonumber(h${i}[3]) or 0
local roll${i} = w${i} ~= ws${i}
if roll${i} then
  if w${i} + ${W} == ws${i} then pr${i} = cu${i} else pr${i} = 0 end
  cu${i} = 0
end
local r${i} = ${L} - pr${i} * (${W} - (now - ws${i})) / ${W} - cu${i}`;
    case 2:
      return `
local h${i} = redis.call('HMGET', ${K}, 's', 'd')
local s${i} = tonumber(h${i}[1]) or 0
local d${i} = tonumber(h${i}[2]) or math.floor(now)
local dirty${i} = false
local old${i} = redis.call('ZRANGEBYSCORE', KEYS[${z}], '-inf', now - ${W})
if #old${i} > 0 then
  for _, m in ipairs(old${i}) do s${i} = s${i} - tonumber(string.match(m, ':(.+)$')) end
  redis.call('ZREMRANGEBYSCORE', KEYS[${z}], '-inf', now - ${W})
  if redis.call('ZCARD', KEYS[${z}]) == 0 then s${i} = 0 end
  dirty${i} = true
end
local r${i} = ${L} - s${i}`;
    case 3:
      return `
local h${i} = redis.call('HMGET', ${K}, 'u', 't')
local u${i} = tonumber(h${i}[1]) or 0
local el${i} = now - (tonumber(h${i}[2]) or now)
if el${i} > 0 then u${i} = math.max(0, u${i} - el${i} * ${L} / ${W}) end
local r${i} = ${L} - u${i}`;
    default:
      return `
local tat${i} = tonumber(redis.call('GET', ${K})) or now
if tat${i} < now then tat${i} = now end
local r${i} = ${L} - (tat${i} - now) * ${L} / ${W}`;
  }
}

/** Charges `amount` (a Lua expression > 0) to policy `i`, whose state `read` loaded. */
function commit(p: CompiledPolicy, i: number, z: number, amount: string): string {
  const W = num(p.windowMs);
  const L = num(p.limit);
  const K = `KEYS[${i}]`;
  switch (p.code) {
    case 0:
      // A window's first charge drops the previous window's field and sets the expiry once per window.
      return `
n${i} = n${i} + ${amount}
if new${i} then
  redis.call('HDEL', ${K}, ws${i} - ${W})
  redis.call('PEXPIREAT', ${K}, ws${i} + ${num(2 * p.windowMs)})
end`;
    case 1:
      return `
cu${i} = cu${i} + ${amount}
if roll${i} then
  redis.call('HSET', ${K}, 'w', ws${i}, 'c', cu${i}, 'p', pr${i})
  redis.call('PEXPIRE', ${K}, ${num(2 * p.windowMs)})
else
  redis.call('HSET', ${K}, 'c', cu${i})
end`;
    case 2:
      return `
d${i} = d${i} + 1
id${i} = d${i}
s${i} = s${i} + ${amount}
redis.call('ZADD', KEYS[${z}], now, d${i} .. ':' .. ${amount})
redis.call('HSET', ${K}, 's', s${i}, 'd', d${i})
redis.call('PEXPIRE', KEYS[${z}], ${num(p.windowMs + 1)})
redis.call('PEXPIRE', ${K}, ${num(p.windowMs + 1)})`;
    case 3:
      return `
u${i} = u${i} + ${amount}
redis.call('HSET', ${K}, 'u', u${i}, 't', now)
redis.call('PEXPIRE', ${K}, math.ceil(u${i} * ${W} / ${L}) + 1)`;
    default:
      return `
tat${i} = tat${i} + ${amount} * ${W} / ${L}
redis.call('SET', ${K}, tat${i}, 'PXAT', math.ceil(tat${i}) + 1)`;
  }
}

/** Lua expression: ms until policy `i`'s whole quota is back. */
function reset(p: CompiledPolicy, i: number, z: number): string {
  const W = num(p.windowMs);
  const L = num(p.limit);
  switch (p.code) {
    case 0:
      return `(n${i} > 0 and ws${i} + ${W} - now or 0)`;
    case 1:
      return `(cu${i} > 0 and ws${i} + ${2 * p.windowMs} - now or (pr${i} > 0 and ws${i} + ${W} - now or 0))`;
    case 2:
      return `newest(KEYS[${z}], ${W})`;
    case 3:
      return `(u${i} * ${W} / ${L})`;
    default:
      return `(tat${i} - now)`;
  }
}

/** Lua statements setting `q` to the ms until policy `i` admits charge `c<i>`. */
function retry(p: CompiledPolicy, i: number, z: number): string {
  const W = num(p.windowMs);
  const L = num(p.limit);
  switch (p.code) {
    case 0:
      return `q = ws${i} + ${W} - now`;
    case 1:
      return `
if pr${i} > 0 and cu${i} + c${i} <= ${L} then
  q = ws${i} + ${W} * (1 - (${L} - cu${i} - c${i}) / pr${i}) - now
else
  q = ws${i} + ${W} + ${W} * (1 - (${L} - c${i}) / cu${i}) - now
end`;
    case 2:
      return `
q = ${W}
local excess = s${i} + c${i} - ${L}
local all = redis.call('ZRANGE', KEYS[${z}], 0, -1, 'WITHSCORES')
for k = 1, #all, 2 do
  excess = excess - tonumber(string.match(all[k], ':(.+)$'))
  if excess <= 1e-9 then
    q = tonumber(all[k + 1]) + ${W} - now
    break
  end
end`;
    case 3:
      return `q = (u${i} - (${L} - c${i})) * ${W} / ${L}`;
    default:
      return `q = tat${i} + c${i} * ${W} / ${L} - ${W} - now`;
  }
}

const PRELUDE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000`;

const NEWEST = `
local function newest(z, w)
  local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  if #last > 0 then return tonumber(last[2]) + w - now end
  return 0
end`;

/** Values per check in the check script's reply: 3 per policy, the time, a log id per policy, allowed. */
export function checkStride(policies: number): number {
  return policies * 4 + 2;
}

/**
 * The check script for `policies`, covering one or more checks in one call (checks issued in the same tick
 * are sent together, one `TIME` for all). KEYS: each check's keys in turn (`keySuffixes` order); ARGV: each
 * check's charge per policy in turn. Checks run one after the other, each seeing the ones before it.
 * Returns, for each check, the store-neutral check output (store.ts: per policy remaining, resetMs,
 * retryAfterMs; the time, floored to ms; per policy the log entry id) followed by allowed (0/1, or -1
 * when that check failed): a fixed stride per check, so the reply needs no reshaping. The failed checks'
 * error messages follow, in order.
 */
export function checkLua(policies: readonly CompiledPolicy[]): string {
  const z = logKeys(policies);
  const ids = policies.map((_, k) => k + 1);
  const hasLog = policies.some((p) => p.code === 2);
  const hasFixed = policies.some((p) => p.code === 0);
  const one = `
local ok = true
${ids
  .map(
    (i) => `
local c${i} = tonumber(ARGV[${i}])${read(policies[i - 1]!, i, z[i - 1]!)}
local id${i} = 0
if c${i} > 0 and r${i} - c${i} < -1e-9 then ok = false end`,
  )
  .join('\n')}
if ok then
${ids
  .map(
    (i) => `if c${i} > 0 then
${commit(policies[i - 1]!, i, z[i - 1]!, `c${i}`)}
r${i} = r${i} - c${i}
end`,
  )
  .join('\n')}
else
${ids
  .map((i) => {
    const code = policies[i - 1]!.code;
    if (code === 2) return `if dirty${i} then redis.call('HSET', KEYS[${i}], 's', s${i}) end`;
    if (code !== 0) return '';
    return `if new${i} then
  redis.call('HDEL', KEYS[${i}], ws${i})
elseif c${i} > 0 then
  ${incr(`KEYS[${i}]`, `ws${i}`, `-c${i}`)}
end`;
  })
  .join('\n')}
end
local q
${ids
  .map(
    (i) => `q = 0
if not ok and c${i} > 0 and r${i} - c${i} < -1e-9 then
${retry(policies[i - 1]!, i, z[i - 1]!)}
end
local q${i} = math.ceil(q)
local reset${i} = math.ceil(${reset(policies[i - 1]!, i, z[i - 1]!)})`,
  )
  .join('\n')}
${ids.map((i) => `out[#out + 1] = math.max(0, math.floor(r${i} + 1e-9))\nout[#out + 1] = reset${i}\nout[#out + 1] = q${i}`).join('\n')}
out[#out + 1] = math.floor(now)
${ids.map((i) => `out[#out + 1] = id${i}`).join('\n')}
out[#out + 1] = ok and 1 or 0
`
    // One check's keys and charges start at offsets kb and ab of KEYS and ARGV.
    .replace(/KEYS\[(\d+)\]/g, 'KEYS[kb + $1]')
    .replace(/ARGV\[(\d+)\]/g, 'ARGV[ab + $1]');
  const keysPerCheck = keySuffixes(policies).length;
  const stride = checkStride(policies.length);
  // A check that fails (a key of the wrong type, say) fails alone: its output becomes zeros with allowed
  // -1, and its error message is appended after every check's output.
  return `${PRELUDE}${hasLog ? NEWEST : ''}${hasFixed ? INCR : ''}
local out = {}
local errors = {}
local function check(kb, ab)${one}end
for j = 0, #ARGV / ${policies.length} - 1 do
  local at = #out
  local fine, e = pcall(check, j * ${keysPerCheck}, j * ${policies.length})
  if not fine then
    for k = #out, at + 1, -1 do out[k] = nil end
    for k = 1, ${stride - 1} do out[at + k] = 0 end
    out[at + ${stride}] = -1
    errors[#errors + 1] = type(e) == 'table' and tostring(e.err) or tostring(e)
  end
end
for _, e in ipairs(errors) do out[#out + 1] = e end
return out
`;
}

/**
 * The settle script for `policies`. ARGV: the charge's time (ms, from the check), then per policy: the
 * charge, the delta (negative to refund), the log entry id. A refund applies only where the charge's
 * window still counts; an extra charge always applies.
 */
export function settleLua(policies: readonly CompiledPolicy[]): string {
  const z = logKeys(policies);
  const parts = policies.map((p, k) => {
    const i = k + 1;
    const W = num(p.windowMs);
    const L = num(p.limit);
    const K = `KEYS[${i}]`;
    const head = `
local c${i} = tonumber(ARGV[${3 * k + 2}])
local dl${i} = tonumber(ARGV[${3 * k + 3}])
local lid${i} = tonumber(ARGV[${3 * k + 4}])
if dl${i} ~= 0 then
local charged${i} = at - at % ${W}${p.code === 0 ? '' : read(p, i, z[k]!)}`;
    let body: string;
    switch (p.code) {
      case 0:
        body = `
local ws${i} = now - now % ${W}
if ws${i} == charged${i} then
  local cur = tonumber(redis.call('HGET', ${K}, ws${i}))
  if cur then redis.call('HSET', ${K}, ws${i}, math.max(0, cur + dl${i})) end
elseif dl${i} > 0 and ${incr(K, `ws${i}`, `dl${i}`)} == dl${i} then
  redis.call('HDEL', ${K}, ws${i} - ${W})
  redis.call('PEXPIREAT', ${K}, ws${i} + ${num(2 * p.windowMs)})
end`;
        break;
      case 1:
        body = `
if ws${i} == charged${i} then
  cu${i} = math.max(0, cu${i} + dl${i})
elseif ws${i} == charged${i} + ${W} then
  pr${i} = math.max(0, pr${i} + dl${i})
elseif dl${i} > 0 then
  cu${i} = cu${i} + dl${i}
end
redis.call('HSET', ${K}, 'w', ws${i}, 'c', cu${i}, 'p', pr${i})
redis.call('PEXPIRE', ${K}, ${num(2 * p.windowMs)})`;
        break;
      case 2:
        body = `
local member = lid${i} .. ':' .. c${i}
local score = redis.call('ZSCORE', KEYS[${z[k]}], member)
if score then
  local next = math.max(0, c${i} + dl${i})
  redis.call('ZREM', KEYS[${z[k]}], member)
  redis.call('ZADD', KEYS[${z[k]}], score, lid${i} .. ':' .. next)
  s${i} = s${i} + next - c${i}
  redis.call('HSET', ${K}, 's', s${i})
elseif dl${i} > 0 then
  local id${i}
${commit(p, i, z[k]!, `dl${i}`)}
elseif dirty${i} then
  redis.call('HSET', ${K}, 's', s${i})
end`;
        break;
      case 3:
        body = `
u${i} = math.max(0, u${i} + dl${i})
redis.call('HSET', ${K}, 'u', u${i}, 't', now)
redis.call('PEXPIRE', ${K}, math.ceil(u${i} * ${W} / ${L}) + 1)`;
        break;
      default:
        body = `
tat${i} = math.max(now, tat${i} + dl${i} * ${W} / ${L})
if tat${i} > now then redis.call('SET', ${K}, tat${i}, 'PXAT', math.ceil(tat${i}) + 1) else redis.call('DEL', ${K}) end`;
    }
    return `${head}${body}
end`;
  });
  return `${PRELUDE}${policies.some((p) => p.code === 0) ? INCR : ''}
local at = tonumber(ARGV[1])
${parts.join('\n')}
return 1
`;
}

/**
 * The suffix of each Redis key of a limited key (after `<prefix>:{<key>}`), in KEYS order:
 * `:<policy name>:<algorithm code>` per policy, then `...:log` per sliding log. The algorithm is part of
 * the name so that changing a policy's algorithm starts fresh state instead of meeting a key of another
 * type.
 */
export function keySuffixes(policies: readonly CompiledPolicy[]): string[] {
  return [
    ...policies.map((p) => `:${p.name}:${p.code}`),
    ...policies.flatMap((p) => (p.code === 2 ? [`:${p.name}:${p.code}:log`] : [])),
  ];
}
