import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { Counter, Registry } from 'prom-client';
import { renderFamilies, Slicer } from '../../src/metrics/exposition.ts';
import { MetricsCollector } from '../../src/metrics/index.ts';
import { FORMATS, fixedCollectors, masked } from './exposition-fixture.ts';

/** A clock that moves 10 ms each time it is read: every slice is spent at once, so a scrape yields at every chance. */
function racingClock(): { now(): number } {
  let t = 0;
  return { now: () => (t += 10) };
}

/** Runs `work` while counting the event-loop turns (setImmediate callbacks) that happen before it settles. */
async function turnsDuring<T>(work: () => Promise<T>): Promise<{ result: T; turns: number }> {
  let turns = 0;
  let done = false;
  const tick = () => {
    if (done) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  const result = await work();
  done = true;
  return { result, turns };
}

describe('the exposition text', () => {
  for (const format of FORMATS) {
    it(`is byte for byte the fixture's, in ${format}`, async () => {
      for (const [name, collector] of Object.entries(fixedCollectors())) {
        const expected = readFileSync(new URL(`./fixtures/${name}.${format}.txt`, import.meta.url), 'utf8');
        assert.equal(masked(await collector.scrape(format)), expected, `${name} collector`);
        await collector.close();
      }
    });

    it(`is the same when the scrape yields at every chance, in ${format}`, async () => {
      const quick = fixedCollectors();
      const sliced = fixedCollectors({ clock: racingClock() });
      for (const name of Object.keys(quick)) {
        assert.equal(masked(await sliced[name]!.scrape(format)), masked(await quick[name]!.scrape(format)));
      }
      await Promise.all([...Object.values(quick), ...Object.values(sliced)].map((c) => c.close()));
    });
  }
});

describe('a series scraped again', () => {
  it('keeps its labels and shows its new value; a series added since shows too', async () => {
    const registry = new Registry();
    const requests = new Counter({
      name: 'app_requests_total',
      help: 'Requests',
      labelNames: ['tenant'],
      registers: [registry],
    });
    const scrape = async () => {
      const families = (await registry.getMetricsAsJSON()) as Parameters<typeof renderFamilies>[0];
      return (await renderFamilies(families, 'prometheus')).join('');
    };
    requests.inc({ tenant: 'a"b' }, 2);
    assert.match(await scrape(), /^app_requests_total\{tenant="a\\"b"\} 2$/m);
    requests.inc({ tenant: 'a"b' }, 3);
    requests.inc({ tenant: 'c' });
    const again = await scrape();
    assert.match(again, /^app_requests_total\{tenant="a\\"b"\} 5$/m);
    assert.match(again, /^app_requests_total\{tenant="c"\} 1$/m);
  });
});

describe('a scrape yields to the event loop', () => {
  it('between the metrics it reads, within a family of many samples, and between tracked fields', async () => {
    const registry = new Registry();
    const tenants: Counter = new Counter({
      name: 'app_tenant_requests_total',
      help: 'Requests by tenant, rebuilt in collect()',
      labelNames: ['tenant'],
      registers: [registry],
      collect() {
        tenants.reset();
        for (let t = 0; t < 1_000; t++) tenants.inc({ tenant: `tenant-${t}` }, t);
      },
    });
    const collector = new MetricsCollector({ intervalMs: 0, registry, clock: racingClock() });
    const fields: Record<string, number> = {};
    for (let f = 0; f < 1_000; f++) fields[`field_${f}`] = f;
    collector.track('component', { stats: () => fields });
    const { result, turns } = await turnsDuring(() => collector.scrape());
    assert.match(result, /^app_tenant_requests_total\{tenant="tenant-999"\} 999$/m);
    assert.match(result, /^clawperf_component_field_999 999$/m);
    // At least one turn per 64 samples of the family and per 256 tracked fields.
    assert.ok(turns >= 1_000 / 64 + 1_000 / 256, `${turns} turns`);
    await collector.close();
  });

  it('not at all while its slice lasts', async () => {
    const registry = new Registry();
    const counter = new Counter({ name: 'app_total', help: 'h', labelNames: ['k'], registers: [registry] });
    for (let k = 0; k < 500; k++) counter.inc({ k: String(k) });
    const families = (await registry.getMetricsAsJSON()) as Parameters<typeof renderFamilies>[0];
    const frozen = { now: () => 0 };
    const { turns } = await turnsDuring(() => renderFamilies(families, 'prometheus', new Slicer(frozen)));
    assert.equal(turns, 0);
  });
});
