/**
 * How far the change-aware TTL policy is from what more knowledge would allow, on the simulator's trace.
 * Each row is a policy given something `SmartCache` cannot know, replayed like the rows of `simulate.ts`:
 *
 * - `Bayes, true prior`: knows the population (which change rates exist and how many keys have each),
 *   not which key has which; updates each key's odds from every refresh (changed or not over the exact
 *   time between fetches) and picks the TTL with the lowest expected cost of misses and stale reads.
 * - `class known after 1st refresh`: as above, but told each key's true change rate at its first refresh.
 * - `oracle`: told each key's true change rate from its first fetch.
 *
 * Every row weighs a stale read as `staleReadCost` misses with the same rule; the first fetch of a key,
 * whose read rate is unknown, gets the TTL for a rarely read key.
 *
 *   node --import tsx bench/simulate-bounds.ts [--requests 1000000] [--keys 100000] [--seed 42]
 */
import { pathToFileURL } from 'node:url';
import type { TtlContext, TtlPolicy } from '../src/cache/smart-cache.ts';
import { machine } from './harness.ts';
import {
  DEFAULT_TRACE,
  generateTrace,
  type PolicyResult,
  type PolicyUnderTest,
  runPolicy,
  type Trace,
  table,
} from './simulate.ts';

/** Read rates below this, per ms, are "rarely read": the renewal cost then hinges on the change odds only. */
const RARE_READ_RATE = 1e-12;

/**
 * The TTL with the lowest long-run cost per unit of time for a key read `r` times per ms whose change
 * rate is `rates[i]` with probability `weights[i]`: one period costs one miss plus `cost` times its expected
 * stale reads and lasts `T + 1/r`. The optimum solves `Σ w·[(1 - e^-λT) + r·((1 - e^-λT)/λ - T·e^-λT)] = 1/cost`,
 * whose left side grows with T, so a bisection on log T finds it.
 */
export function expectedCostTtl(
  rates: readonly number[],
  weights: readonly number[],
  r: number,
  cost: number,
) {
  const lhs = (t: number) => {
    let sum = 0;
    for (let i = 0; i < rates.length; i++) {
      const x = rates[i]! * t;
      const changed = -Math.expm1(-x);
      sum += weights[i]! * (changed + r * t * (changed / x - (1 - changed)));
    }
    return sum;
  };
  let lo = 0;
  let hi = Math.log(1e13);
  if (lhs(Math.exp(hi)) < 1 / cost) return Number.POSITIVE_INFINITY;
  for (let i = 0; i < 40; i++) {
    const mid = (lo + hi) / 2;
    if (lhs(Math.exp(mid)) < 1 / cost) lo = mid;
    else hi = mid;
  }
  return Math.exp(hi);
}

const readRate = (c: TtlContext) =>
  Math.max(c.hits + c.misses - 1, 1) / Math.max(c.now - c.firstSeenAt, 1_000);
const isFirstFetch = (c: TtlContext) => c.reason === 'fetch' && c.hits + c.misses <= 1;

interface Population {
  rates: number[];
  shares: number[];
  /** Index into `rates` of each key. */
  classOf: Uint8Array;
}

function population(trace: Trace): Population {
  const means = trace.changeMeanMs;
  if (means === undefined) throw new TypeError('the trace does not say how often its keys change');
  const distinct = [...new Set(means)].sort((a, b) => a - b);
  const classOf = new Uint8Array(means.length);
  const counts = distinct.map(() => 0);
  for (let k = 0; k < means.length; k++) {
    const i = distinct.indexOf(means[k]!);
    classOf[k] = i;
    counts[i]!++;
  }
  return { rates: distinct.map((m) => 1 / m), shares: counts.map((n) => n / means.length), classOf };
}

const keyIndex = (key: string) => Number(key.slice(key.indexOf(':') + 1));

/** Knows the population's rates and shares; learns each key's odds from its refreshes. */
function bayesTruePrior(pop: Population, cost: number): TtlPolicy {
  const logOdds = new Map<string, { at: number; log: number[] }>();
  const weights = pop.shares.map(() => 0);
  return (c) => {
    let state = logOdds.get(c.key);
    if (c.reason === 'fetch') {
      if (state === undefined || c.fetches <= 1) {
        state = { at: c.now, log: pop.shares.map(Math.log) };
        logOdds.set(c.key, state);
      } else if (c.changed !== undefined) {
        const gap = c.now - state.at;
        for (let i = 0; i < pop.rates.length; i++) {
          state.log[i]! += c.changed ? Math.log(-Math.expm1(-pop.rates[i]! * gap)) : -pop.rates[i]! * gap;
        }
        state.at = c.now;
      }
    }
    const log = state?.log ?? pop.shares.map(Math.log);
    const max = Math.max(...log);
    let total = 0;
    for (let i = 0; i < log.length; i++) total += weights[i] = Math.exp(log[i]! - max);
    for (let i = 0; i < log.length; i++) weights[i]! /= total;
    return expectedCostTtl(pop.rates, weights, isFirstFetch(c) ? RARE_READ_RATE : readRate(c), cost);
  };
}

/** Knows the population; told each key's rate at its first refresh (`afterFetches: 2`) or first fetch (1). */
function toldRate(pop: Population, cost: number, afterFetches: number): TtlPolicy {
  const one = [1];
  return (c) => {
    const r = isFirstFetch(c) ? RARE_READ_RATE : readRate(c);
    if (c.fetches < afterFetches) return expectedCostTtl(pop.rates, pop.shares, r, cost);
    return expectedCostTtl([pop.rates[pop.classOf[keyIndex(c.key)]!]!], one, r, cost);
  };
}

export function boundPolicies(trace: Trace): (() => PolicyUnderTest)[] {
  const pop = population(trace);
  const rows: (() => PolicyUnderTest)[] = [
    () => ({ name: 'change-aware', options: { policy: 'change-aware' } }),
  ];
  for (const cost of [5, 7, 10]) {
    rows.push(() => ({
      name: `Bayes, true prior, staleReadCost ${cost}`,
      options: { policy: bayesTruePrior(pop, cost) },
    }));
  }
  for (const cost of [7, 10, 15]) {
    rows.push(() => ({
      name: `class known after 1st refresh, staleReadCost ${cost}`,
      options: { policy: toldRate(pop, cost, 2) },
    }));
  }
  for (const cost of [3, 7, 15]) {
    rows.push(() => ({ name: `oracle, staleReadCost ${cost}`, options: { policy: toldRate(pop, cost, 1) } }));
  }
  return rows;
}

async function main(): Promise<void> {
  const options = { ...DEFAULT_TRACE };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const field = ({ '--requests': 'requests', '--keys': 'keys', '--seed': 'seed' } as const)[
      argv[i] as '--requests'
    ];
    const value = Number(argv[i + 1]);
    if (field === undefined || !Number.isInteger(value) || value < 0) {
      throw new TypeError(`usage: simulate-bounds [--requests N] [--keys N] [--seed N]; got ${argv[i]}`);
    }
    options[field] = value;
  }
  const trace = generateTrace(options);
  const results: PolicyResult[] = [];
  for (const row of boundPolicies(trace)) results.push(await runPolicy(trace, row()));
  console.log(table(results));
  console.log(
    `\nCommand: \`node --import tsx bench/simulate-bounds.ts --requests ${options.requests} --keys ${options.keys} --seed ${options.seed}\` (${machine()}).`,
  );
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
