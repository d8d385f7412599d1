/**
 * The naive chain /create is measured against (issue 24): uWS takes a POST,
 * JSON.parse's its body, asks over NATS with one `nc.request` per HTTP
 * request, and answers with what a responder echoed. No authentication, no
 * state, no journal: what the simplest HTTP → NATS → process → HTTP design
 * costs before it does any work. Spawned by bench/create.ts with CHAIN_NATS_URL
 * (the echo responder is bench/nats-floor.ts's); prints "chain listening <port>".
 */
import uWS from 'uWebSockets.js';
import { connect } from '@nats-io/transport-node';
import { ECHO_SUBJECT } from './nats-floor.js';

const nc = await connect({ servers: process.env.CHAIN_NATS_URL! });
const app = uWS.App().post('/*', (res) => {
  let aborted = false;
  res.onAborted(() => (aborted = true));
  const chunks: Buffer[] = [];
  res.onData((ab, last) => {
    chunks.push(Buffer.from(new Uint8Array(ab).slice()));
    if (!last || aborted) return;
    const body = JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>;
    nc.request(ECHO_SUBJECT, JSON.stringify(body), { timeout: 10_000 }).then(
      (m) => {
        if (!aborted) res.cork(() => res.writeStatus('200 OK').writeHeader('content-type', 'application/json').end(m.string()));
      },
      () => {
        if (!aborted) res.cork(() => res.writeStatus('503 Service Unavailable').end());
      },
    );
  });
});

const port = await new Promise<number>((resolve, reject) => app.listen('127.0.0.1', 0, (t) => (t ? resolve(uWS.us_socket_local_port(t)) : reject(new Error('listen failed')))));
process.on('SIGTERM', () => process.exit(0));
console.log(`chain listening ${port}`);
