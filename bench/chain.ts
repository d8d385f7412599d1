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
import { onPostBody } from './uws-post.js';

const nc = await connect({ servers: process.env.CHAIN_NATS_URL! });
const app = uWS.App().post(
  '/*',
  onPostBody((bytes, res, alive) => {
    const body = JSON.parse(bytes.toString()) as Record<string, unknown>;
    nc.request(ECHO_SUBJECT, JSON.stringify(body), { timeout: 10_000 }).then(
      (m) => {
        if (alive()) res.cork(() => res.writeStatus('200 OK').writeHeader('content-type', 'application/json').end(m.string()));
      },
      () => {
        if (alive()) res.cork(() => res.writeStatus('503 Service Unavailable').end());
      },
    );
  }),
);

const port = await new Promise<number>((resolve, reject) => app.listen('127.0.0.1', 0, (t) => (t ? resolve(uWS.us_socket_local_port(t)) : reject(new Error('listen failed')))));
process.on('SIGTERM', () => process.exit(0));
console.log(`chain listening ${port}`);
