/**
 * `npm run bench [component...]`: runs bench/<component>.ts (or every benchmark) each in its own process,
 * with --expose-gc so memory figures can be taken. The TTL simulator, its bounds, the 10-minute gateway
 * soak and the sustained-throughput search (4-5 minutes) are not quick benchmarks: they run only when named
 * (`npm run simulate`, `npm run bench simulate-bounds`, `npm run bench gateway-soak`, `npm run bench
 * gateway-throughput`).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { machine } from './harness.ts';

const here = dirname(fileURLToPath(import.meta.url));
const available = readdirSync(here)
  .filter((f) => f.endsWith('.ts') && !['harness.ts', 'run.ts'].includes(f))
  .map((f) => f.slice(0, -3))
  .sort();
const ON_REQUEST = ['simulate', 'simulate-bounds', 'gateway-soak', 'gateway-throughput'];
const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !available.includes(w));
if (unknown.length > 0) {
  console.error(`unknown bench: ${unknown.join(', ')}; available: ${available.join(', ')}`);
  process.exit(1);
}
console.log(`Machine: ${machine()}`);
let failed = false;
for (const name of wanted.length > 0 ? wanted : available.filter((n) => !ON_REQUEST.includes(n))) {
  console.log(`\n## bench/${name}.ts`);
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', join(here, `${name}.ts`)], {
    stdio: 'inherit',
  });
  if (r.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
