/**
 * docs/alerts.yaml: valid rules (`promtool check rules`), alerts that fire and stay quiet when they should
 * (`promtool test rules docs/alerts.test.yaml`, with a firing case for every alert), and only metric names
 * the gateway exports.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { request } from 'undici';
import { createGateway } from '../../src/gateway/server.ts';
import { requireBinary } from '../helpers/servers.ts';

const DOCS = join(import.meta.dirname, '..', '..', 'docs');

function promtool(...args: string[]) {
  requireBinary('promtool', 'prometheus');
  const result = spawnSync('promtool', args, { cwd: DOCS, encoding: 'utf8' });
  return { ok: result.status === 0, output: `${result.stdout}${result.stderr}` };
}

describe('docs/alerts.yaml', () => {
  it('is valid to promtool', () => {
    const result = promtool('check', 'rules', 'alerts.yaml');
    assert.ok(result.ok, result.output);
  });

  it('passes its unit tests', () => {
    const result = promtool('test', 'rules', 'alerts.test.yaml');
    assert.ok(result.ok, result.output);
  });

  it('has a unit test that fires each alert', () => {
    const rules = readFileSync(join(DOCS, 'alerts.yaml'), 'utf8');
    const tests = readFileSync(join(DOCS, 'alerts.test.yaml'), 'utf8');
    const alerts = [...rules.matchAll(/^\s*- alert: (\w+)$/gm)].map((m) => m[1]!);
    assert.ok(alerts.length >= 9, `alerts: ${alerts}`);
    for (const alert of alerts) {
      // A test of the alert that expects it to fire: its alertname followed by a non-empty exp_alerts.
      assert.match(tests, new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`), alert);
    }
  });

  it('names only metrics the gateway exports', async () => {
    const rules = readFileSync(join(DOCS, 'alerts.yaml'), 'utf8');
    const names = new Set(rules.match(/\bclawperf_[a-z0-9_]+/g));
    assert.ok(names.size > 0);
    const gw = await createGateway({ cacheDir: false });
    try {
      const base = await gw.app.listen({ port: 0, host: '127.0.0.1' });
      const exposition = await (await request(`${base}/metrics`)).body.text();
      for (const name of names) assert.match(exposition, new RegExp(`^# TYPE ${name} `, 'm'), name);
    } finally {
      await gw.close();
    }
  });
});
