import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startRestartable } from './servers.ts';

describe('startRestartable', () => {
  it('fails at once, with its output, when the server exits before it answers', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'clawperf-exits-'));
    await assert.rejects(
      startRestartable('sh', ['-c', 'echo "bind: address already in use" >&2; exit 1'], dir, {
        probe: () => false,
        what: 'a server that cannot bind',
        timeoutMs: 60_000,
      }),
      (error: Error) =>
        /a server that cannot bind: the server exited \(1\)/.test(error.message) &&
        error.message.includes('address already in use'),
    );
  });
});
