/**
 * Runs `clawperf gateway` straight from this file (`node --import tsx src/gateway/main.ts [options]`),
 * without the CLI dispatcher.
 *
 * @module
 */
import { runGateway } from './cli.ts';

process.exitCode = await runGateway(process.argv.slice(2));
