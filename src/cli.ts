/**
 * The `clawperf` command. `bin/clawperf.js` imports this file from the build and calls {@link main}.
 */
import { readFileSync } from 'node:fs';

interface Command {
  summary: string;
  run(args: string[]): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  gateway: {
    summary:
      'run the OpenAI-compatible performance gateway, or check its configuration (clawperf gateway --help, clawperf gateway check --help)',
    async run(args) {
      // Loaded on demand, so `clawperf --help` starts without Fastify, Redis or OpenTelemetry.
      const { runGateway } = await import('./gateway/cli.ts');
      return runGateway(args);
    },
  },
};

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

function usage(): string {
  const names = Object.keys(COMMANDS);
  const width = Math.max(12, ...names.map((n) => n.length));
  return [
    'Usage: clawperf <command> [options]',
    '',
    'The performance layer for TypeScript AI agent gateways.',
    '',
    'Commands:',
    ...names.map((n) => `  ${n.padEnd(width)}  ${COMMANDS[n]!.summary}`),
    `  ${'--help'.padEnd(width)}  show this help`,
    `  ${'--version'.padEnd(width)}  print the version`,
    '',
  ].join('\n');
}

/** Runs the CLI with `argv` (without node and script) and resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return 0;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    process.stderr.write(`clawperf: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  return command.run(rest);
}
