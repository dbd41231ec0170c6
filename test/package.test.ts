/**
 * The package as users get it: `npm pack` (which builds dist/ through `prepare`), the tarball installed into
 * an empty project, every `exports` subpath imported by name, and the `clawperf` bin run. The unit tests run
 * src/ through tsx, so only this test notices a broken exports map or a file missing from the tarball.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

const root = new URL('..', import.meta.url).pathname;
const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  exports: Record<string, unknown>;
};
const subpaths = Object.keys(pkg.exports).filter((p) => p !== './package.json');

const npm = (args: string[], cwd: string) =>
  execFileSync('npm', args, {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, npm_config_loglevel: 'error' },
  });

describe('the packed package', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'clawperf-pack-'));
    const [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', dir], root)) as {
      filename: string;
    }[];
    await writeFile(
      join(dir, 'package.json'),
      JSON.stringify({ name: 'consumer', private: true, type: 'module' }),
    );
    npm(['install', '--prefer-offline', '--no-audit', '--no-fund', join(dir, packed!.filename)], dir);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  for (const subpath of subpaths) {
    const specifier = subpath === '.' ? pkg.name : `${pkg.name}/${subpath.slice(2)}`;
    it(`imports ${specifier} by name, with its type declarations in the tarball`, () => {
      const out = execFileSync(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `const m = await import('${specifier}'); console.log(Object.keys(m).length)`,
        ],
        { cwd: dir, encoding: 'utf8' },
      );
      assert.ok(Number(out) > 0, `${specifier} exports nothing`);
      const entry = pkg.exports[subpath] as { types: string };
      execFileSync('test', ['-f', join(dir, 'node_modules', pkg.name, entry.types)]);
    });
  }

  it('installs a clawperf bin that prints its help and version', () => {
    const bin = join(dir, 'node_modules', '.bin', 'clawperf');
    assert.match(execFileSync(bin, ['--help'], { encoding: 'utf8' }), /Usage: clawperf <command>/);
    assert.equal(execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim(), pkg.version);
  });

  it('starts nothing on import: a script importing every entry point exits by itself', () => {
    const imports = subpaths
      .map((s) => `await import('${s === '.' ? pkg.name : `${pkg.name}/${s.slice(2)}`}');`)
      .join(' ');
    execFileSync(process.execPath, ['--input-type=module', '-e', imports], { cwd: dir, timeout: 20_000 });
  });
});
