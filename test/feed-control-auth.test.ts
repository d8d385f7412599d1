import { afterAll, beforeAll, expect, it } from 'vitest';
import { join } from 'node:path';
import { nuid, type NatsConnection } from '@nats-io/transport-node';
import { prepareNatsAuth, type NatsAuth } from '../src/launcher/nats-auth.js';
import { freePort, startNatsServer, type NatsServer } from '../src/launcher/nats-server.js';
import { connectNats } from '../src/shared/nats.js';
import { provisionStreams } from '../src/shared/streams.js';
import { startBridge, type BridgeHandle } from '../src/feed/service.js';
import { decode, encode } from '../proto/codec.js';
import { FEED_CONTROL_REPLY_PREFIX, FEED_CONTROL_SUBJECT, type FeedControlReply, type FeedControlRequest } from '../proto/feed.js';
import type { Role } from '../proto/roles.js';
import { quietLog, tempDir } from './helpers/system.js';
import { bridgeOpts } from './helpers/feed.js';

/**
 * The operator's feed decisions under the launcher's NATS permissions
 * (proto/roles.ts): the gateway asks on FEED_CONTROL_SUBJECT with a reply
 * under FEED_CONTROL_REPLY_PREFIX, the bridge answers there; no other role
 * may send the bridge a decision.
 */
let dir: ReturnType<typeof tempDir>;
let auth: NatsAuth;
let server: NatsServer;
let bridge: BridgeHandle;
const conns: NatsConnection[] = [];

async function as(role: Role): Promise<NatsConnection> {
  const nc = await connectNats(server.url, `test-${role}`, { waitForServer: false, role, credsFile: auth.credsFile(role) });
  conns.push(nc);
  return nc;
}

beforeAll(async () => {
  dir = tempDir('etf-feed-auth-');
  auth = prepareNatsAuth(join(dir.path, 'nats-auth'));
  server = await startNatsServer({ port: await freePort(), storeDir: join(dir.path, 'nats'), configFile: auth.configFile });
  await provisionStreams(await as('operator'));
  bridge = await startBridge(await bridgeOpts(server.url, { natsCreds: auth.credsFile('feed') }), quietLog);
});

afterAll(async () => {
  for (const nc of conns) await nc.close().catch(() => {});
  await bridge?.close();
  await server?.stop();
  dir?.remove();
});

const ask = (nc: NatsConnection, req: FeedControlRequest) =>
  nc.request(FEED_CONTROL_SUBJECT, encode(req), { timeout: 2000, noMux: true, reply: `${FEED_CONTROL_REPLY_PREFIX}${nuid.next()}` });

it('the gateway\'s role reaches the bridge and hears its answer; the engine\'s and the pricing actor\'s cannot send it a decision', async () => {
  const reply = decode<FeedControlReply>((await ask(await as('gateway'), { v: 1, op: 'verdict', id: 'v-none', decision: 'confirm', by: 'instructor' })).data);
  expect(reply).toMatchObject({ ok: false, code: 'not_found' });
  for (const role of ['engine', 'pricing'] as const) {
    // A publish the server refuses is never delivered: the request gets no responder.
    await expect(ask(await as(role), { v: 1, op: 'ack', id: 'all', by: role })).rejects.toThrow();
  }
});
