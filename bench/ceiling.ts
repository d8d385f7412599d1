/**
 * The HTTP ceiling the gateway is measured against: uWS answering a form POST
 * with JSON and nothing else (no auth, no NATS, no engine). With
 * CEILING_FRONT=framed, the same server behind the gateway's front, so the
 * difference is what the front alone costs. Spawned by bench/create.ts;
 * prints "ceiling listening <port>" when ready.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import uWS from 'uWebSockets.js';
import { FRONT_PEER_HEADER } from '../proto/http.js';
import { startFront } from '../src/gateway/front/front.js';
import { createLogger } from '../src/shared/log.js';

const framed = process.env.CEILING_FRONT === 'framed';
const app = uWS.App().post('/*', (res) => {
  let aborted = false;
  res.onAborted(() => (aborted = true));
  const chunks: Buffer[] = [];
  res.onData((ab, last) => {
    chunks.push(Buffer.from(new Uint8Array(ab).slice()));
    if (!last || aborted) return;
    const form = new URLSearchParams(Buffer.concat(chunks).toString());
    const body = JSON.stringify({ username: form.get('username'), amount: Number(form.get('amount')) });
    res.cork(() => res.writeStatus('200 OK').writeHeader('content-type', 'application/json').end(body));
  });
});

let port: number;
if (framed) {
  const dir = mkdtempSync(join(tmpdir(), 'etf-ceiling-'));
  const path = join(dir, 'uws.sock');
  await new Promise<void>((resolve, reject) => app.listen_unix((t) => (t ? resolve() : reject(new Error('listen_unix failed'))), path));
  const front = await startFront({ host: '127.0.0.1', port: 0, upstreamPath: path, peerHeader: FRONT_PEER_HEADER, idleTimeoutMs: 10_000, log: createLogger('ceiling', 'warn') });
  port = front.port;
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
} else {
  port = await new Promise<number>((resolve, reject) => app.listen('127.0.0.1', 0, (t) => (t ? resolve(uWS.us_socket_local_port(t)) : reject(new Error('listen failed')))));
}
process.on('SIGTERM', () => process.exit(0));
console.log(`ceiling listening ${port}`);
