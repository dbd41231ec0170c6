import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { main } from '../src/cli.ts';

async function run(argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const stdout = process.stdout.write;
  const stderr = process.stderr.write;
  process.stdout.write = ((chunk: string) => out.push(chunk) > 0) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string) => err.push(chunk) > 0) as typeof process.stderr.write;
  try {
    const code = await main(argv);
    return { code, out: out.join(''), err: err.join('') };
  } finally {
    process.stdout.write = stdout;
    process.stderr.write = stderr;
  }
}

describe('the clawperf command', () => {
  it('prints usage for --help and for no command', async () => {
    for (const argv of [['--help'], []]) {
      const { code, out } = await run(argv);
      assert.equal(code, 0);
      assert.match(out, /^Usage: clawperf <command> \[options\]/);
    }
  });

  it('rejects an unknown command with exit code 2 and the usage', async () => {
    const { code, err } = await run(['frobnicate']);
    assert.equal(code, 2);
    assert.match(err, /unknown command "frobnicate"/);
    assert.match(err, /Usage: clawperf/);
  });

  it('prints the package version', async () => {
    const { code, out } = await run(['--version']);
    assert.equal(code, 0);
    assert.match(out, /^\d+\.\d+\.\d+\n$/);
  });
});
