#!/usr/bin/env node
// A recording pass-through between OpenClaw and the clawperf gateway, for examples/openclaw/run.sh.
//
//   node tap.mjs TARGET_URL LOG_FILE [BODY_DIR]
//
// Listens on a free loopback port (printed as "tap listening on http://127.0.0.1:PORT"), forwards every
// request unchanged to TARGET_URL and streams the answer back unchanged, then appends one JSON line per
// request to LOG_FILE: method, path, the request's model and stream flag, the answer's status, its
// x-clawperf-cache and x-clawperf-overhead-ms headers, and the time to the end of the answer. A non-2xx
// answer also records the request and answer bodies (first 2,000 characters each), to tell what failed.
// With BODY_DIR, every request body is also saved whole there, as NNN-<path>.json.
// Plain Node, no dependencies.
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { join } from 'node:path';

const [target, logFile, bodyDir] = process.argv.slice(2);
if (!target || !logFile) {
  console.error('usage: node tap.mjs TARGET_URL LOG_FILE [BODY_DIR]');
  process.exit(2);
}
const upstream = new URL(target);
if (bodyDir) mkdirSync(bodyDir, { recursive: true });
let count = 0;

function summary(body) {
  try {
    const json = JSON.parse(body);
    return { model: json.model, stream: json.stream === true };
  } catch {
    return {};
  }
}

const server = createServer((req, res) => {
  const started = performance.now();
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    count += 1;
    if (bodyDir && body.length > 0) {
      const name = `${String(count).padStart(3, '0')}-${req.url.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '')}.json`;
      writeFileSync(join(bodyDir, name), body);
    }
    const headers = { ...req.headers, host: upstream.host };
    const out = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        const failed = (answer.statusCode ?? 502) >= 300;
        const kept = [];
        answer.on('data', (chunk) => {
          if (failed) kept.push(chunk);
          res.write(chunk);
        });
        answer.on('end', () => {
          res.end();
          const line = {
            method: req.method,
            path: req.url,
            ...summary(body.toString('utf8')),
            status: answer.statusCode,
            'x-clawperf-cache': answer.headers['x-clawperf-cache'],
            'x-clawperf-overhead-ms': answer.headers['x-clawperf-overhead-ms'],
            ms: Math.round(performance.now() - started),
          };
          if (failed) {
            line.requestBody = body.toString('utf8').slice(0, 2000);
            line.answerBody = Buffer.concat(kept).toString('utf8').slice(0, 2000);
          }
          appendFileSync(logFile, `${JSON.stringify(line)}\n`);
        });
      },
    );
    out.on('error', (error) => {
      appendFileSync(
        logFile,
        `${JSON.stringify({ method: req.method, path: req.url, error: error.message })}\n`,
      );
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: `tap: ${error.message}` } }));
    });
    out.end(body);
  });
});

server.listen(0, '127.0.0.1', () => {
  console.log(`tap listening on http://127.0.0.1:${server.address().port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
