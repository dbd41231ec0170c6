#!/usr/bin/env node
// `npm test [-- paths...]`: makes sure the server binaries the suite runs against are installed, then runs
// every test/**/*.test.ts (or the files under the given paths) with node's test runner through tsx.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

// Binaries the suite starts, with the Debian package that provides each. PostgreSQL's server binaries are
// not on PATH: they live in /usr/lib/postgresql/<version>/bin.
const SERVERS = [
  ['redis-server', 'redis-server'],
  ['redis-cli', 'redis-tools'],
  ['prometheus', 'prometheus'],
  ['promtool', 'prometheus'],
  ['influxd', 'influxdb'],
  ['postgresql/initdb', 'postgresql'],
  ['chromium', 'chromium'],
];

const onPath = (bin) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const postgresBin = () =>
  existsSync('/usr/lib/postgresql') &&
  readdirSync('/usr/lib/postgresql').some((v) => existsSync(`/usr/lib/postgresql/${v}/bin/initdb`));
const has = (bin) => (bin === 'postgresql/initdb' ? postgresBin() : onPath(bin));

const missing = [...new Set(SERVERS.filter(([bin]) => !has(bin)).map(([, pkg]) => pkg))];
if (missing.length > 0) {
  const canInstall = process.getuid?.() === 0 && onPath('apt-get');
  if (!canInstall) {
    console.error(
      `The test suite needs these Debian packages, which are not installed: ${missing.join(' ')}\n` +
        `Install them (apt-get install -y ${missing.join(' ')}) and run npm test again.`,
    );
    process.exit(1);
  }
  console.log(`Installing the servers the tests run against: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (args) => spawnSync('apt-get', args, { stdio: 'inherit', env }).status === 0;
  if (!run(['update', '-qq']) || !run(['install', '-y', '-qq', '--no-install-recommends', ...missing])) {
    console.error(`apt-get could not install: ${missing.join(' ')}`);
    process.exit(1);
  }
  const still = SERVERS.filter(([bin]) => !has(bin)).map(([bin]) => bin);
  if (still.length > 0) {
    console.error(`still missing after installing: ${still.join(' ')}`);
    process.exit(1);
  }
}

function collect(path, out) {
  if (statSync(path).isDirectory()) {
    for (const entry of readdirSync(path).sort()) {
      if (entry === 'node_modules' || entry === 'fixtures') continue;
      collect(join(path, entry), out);
    }
  } else if (path.endsWith('.test.ts')) {
    out.push(path);
  }
  return out;
}

const roots = process.argv.slice(2);
const files = (roots.length > 0 ? roots : ['test']).flatMap((root) => collect(root, []));
if (files.length === 0) {
  console.error(`no test files under ${roots.join(' ') || 'test'}`);
  process.exit(1);
}
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=120000', ...files],
  { stdio: 'inherit' },
);
process.exit(result.status ?? 1);
