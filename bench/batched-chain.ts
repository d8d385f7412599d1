/**
 * The naive chain (bench/chain.ts) with the product's batching and nothing
 * else: uWS takes a POST and JSON.parse's its body as the chain does, but
 * requests go over NATS as the gateway sends commands (every request of one
 * event-loop turn in one message, at most BATCHES_OUT messages out, the rest
 * waiting for the next), and the echo responder answers a whole batch at
 * once. No authentication, no state, no journal, no holdings in the answer:
 * what batching alone saves, the floor under /create's CPU per request that
 * any work it does adds to (issue 24). Spawned by bench/create.ts with
 * CHAIN_NATS_URL; prints "batched chain listening <port>".
 */
import uWS from 'uWebSockets.js';
import { connect } from '@nats-io/transport-node';
import { ECHO_SUBJECT } from './nats-floor.js';
import { onPostBody } from './uws-post.js';
import { NextTurn } from '../src/shared/next-turn.js';
import { BATCHES_OUT } from '../src/shared/engine-client.js';

interface Waiting {
  body: unknown;
  res: uWS.HttpResponse;
  alive: () => boolean;
}

const nc = await connect({ servers: process.env.CHAIN_NATS_URL! });
let queue: Waiting[] = [];
let out = 0;

const flush = (): void => {
  while (out < BATCHES_OUT && queue.length > 0) {
    const batch = queue;
    queue = [];
    out++;
    nc.request(ECHO_SUBJECT, JSON.stringify(batch.map((w) => w.body)), { timeout: 10_000 }).then(
      (m) => {
        out--;
        const answers = m.json<unknown[]>();
        batch.forEach((w, i) => {
          if (w.alive()) w.res.cork(() => w.res.writeStatus('200 OK').writeHeader('content-type', 'application/json').end(JSON.stringify(answers[i])));
        });
        flush();
      },
      () => {
        out--;
        for (const w of batch) if (w.alive()) w.res.cork(() => w.res.writeStatus('503 Service Unavailable').end());
        flush();
      },
    );
  }
};
const turn = new NextTurn(flush);

const app = uWS.App().post(
  '/*',
  onPostBody((bytes, res, alive) => {
    queue.push({ body: JSON.parse(bytes.toString()), res, alive });
    turn.schedule();
  }),
);

const port = await new Promise<number>((resolve, reject) => app.listen('127.0.0.1', 0, (t) => (t ? resolve(uWS.us_socket_local_port(t)) : reject(new Error('listen failed')))));
process.on('SIGTERM', () => process.exit(0));
console.log(`batched chain listening ${port}`);
