import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { connect } from '@nats-io/transport-node';
import { prepareNatsAuth, type NatsAuth } from '../src/launcher/nats-auth.js';
import { freePort, startNatsServer, type NatsServer } from '../src/launcher/nats-server.js';
import { connectNats } from '../src/shared/nats.js';
import { provisionStreams } from '../src/shared/streams.js';
import { startBridge, type BridgeHandle } from '../src/feed/service.js';
import { multicastSender } from '../src/feed/multicast.js';
import { EngineClient } from '../src/gateway/engine-client.js';
import { encode } from '../proto/codec.js';
import type { DumpResult } from '../proto/engine.js';
import type { Role } from '../proto/roles.js';
import { ENGINE_ADMIN_SUBJECT, ENGINE_COMMAND_SUBJECT, FILL_STREAM, JOURNAL_STREAM, JOURNAL_SUBJECT, SESSION_SUBJECT, fillSubject } from '../proto/subjects.js';
import { shardNames } from '../proto/shards.js';
import { api, quietLog, startSystem, tempDir, testConfig, until, type TestSystem } from './helpers/system.js';
import { awaitHoldingsSeq } from './helpers/events.js';
import { bridgeOpts, fillMsg, sendClearing, type Sender } from './helpers/feed.js';

let dir: ReturnType<typeof tempDir>;
let auth: NatsAuth;
let server: NatsServer;
let system: TestSystem;
let bridge: BridgeHandle;
let sender: Sender;
let clearing: Parameters<typeof sendClearing>[1];
const conns: NatsConnection[] = [];

/** A client with one role's generated credentials, as the launcher hands them to that service. */
async function as(role: Role): Promise<NatsConnection> {
  const nc = await connectNats(server.url, `test-${role}`, { waitForServer: false, role, credsFile: auth.credsFile(role) });
  conns.push(nc);
  return nc;
}

/** Resolves once the server reports a permission violation for `subject` on this connection (the event, not a timeout). */
function violation(nc: NatsConnection, operation: 'publish' | 'subscription', subject: string): Promise<void> {
  return (async () => {
    for await (const s of nc.status()) {
      const err = (s as { error?: { operation?: string; subject?: string } }).error;
      if (s.type === 'error' && err?.operation === operation && err.subject === subject) return;
    }
  })();
}

async function refusedPublish(nc: NatsConnection, subject: string): Promise<void> {
  const refused = violation(nc, 'publish', subject);
  nc.publish(subject, encode({ forged: true }));
  await nc.flush();
  await refused;
}

async function refusedSubscribe(nc: NatsConnection, subject: string): Promise<void> {
  const refused = violation(nc, 'subscription', subject);
  nc.subscribe(subject, { callback: () => {} });
  await nc.flush();
  await refused;
}

beforeAll(async () => {
  dir = tempDir('etf-auth-');
  // The launcher's own set-up: generated users and permissions, streams made by the operator.
  auth = prepareNatsAuth(join(dir.path, 'nats-auth'));
  server = await startNatsServer({ port: await freePort(), storeDir: join(dir.path, 'nats'), configFile: auth.configFile });
  const op = await as('operator');
  await provisionStreams(op);
  const cfg = testConfig(dir.path);
  // Engine and gateway each with their own role's credentials.
  const engineCfg = { ...cfg, nats: { ...cfg.nats, creds: auth.credsFile('engine') } };
  const gatewayCfg = { ...cfg, nats: { ...cfg.nats, creds: auth.credsFile('gateway') } };
  const { startEngine } = await import('../src/engine/service.js');
  const { startGateway } = await import('../src/gateway/server.js');
  const engine = await startEngine(engineCfg, server.url, quietLog, (err) => {
    throw err;
  });
  const gateway = await startGateway(gatewayCfg, server.url, quietLog);
  const url = `http://127.0.0.1:${gateway.port}`;
  system = { engine, gateway, engines: [engine], gateways: [gateway], url, urls: [url], close: async () => { await gateway.close(); await engine.close(); } };
  const opts = await bridgeOpts(server.url, { natsCreds: auth.credsFile('feed') });
  bridge = await startBridge(opts, quietLog);
  sender = await multicastSender();
  clearing = opts.clearing;
});

afterAll(async () => {
  for (const nc of conns) await nc.close().catch(() => {});
  await bridge?.close();
  await sender?.close();
  await system?.close();
  await server?.stop();
  dir?.remove();
});

describe('the launcher\'s nats-server', () => {
  it('refuses a client without credentials, and one with a wrong password', async () => {
    await expect(connect({ servers: server.url, reconnect: false })).rejects.toThrow(/Authorization Violation/);
    await expect(connect({ servers: server.url, user: 'engine', pass: 'not-the-password', reconnect: false })).rejects.toThrow(/Authorization Violation/);
  });

  it('lets each role do its job: an exchange fill through the bridge reaches holdings, a /create over HTTP works', async () => {
    const op = await as('operator');
    const applied = awaitHoldingsSeq(op, 1, 10);
    await sendClearing(sender, clearing, [3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((symbol, i) => [fillMsg(i + 1, 1, symbol, 2)]));
    await applied;
    const http = api(system.url);
    const created = await http.create('team1', 'team1pass', 1, 'UNDY');
    expect(created.status).toBe(200);
    expect((await http.holdings('team1', 'team1pass')).body.holdings.UNDY).toBe(1);
    // Pricing reads the bridge's books and writes prices.
    const pricing = await as('pricing');
    const { openBucket } = await import('../src/shared/streams.js');
    await (await openBucket(pricing, 'etf_prices')).put('TEST', encode({ ok: true }));
  });

  it('only the feed bridge publishes fills and session markers', async () => {
    for (const role of ['gateway', 'engine', 'pricing', 'operator'] as const) {
      const nc = await as(role);
      await refusedPublish(nc, fillSubject(1));
      await refusedPublish(nc, SESSION_SUBJECT);
    }
  });

  it('only the gateway sends engine commands; nobody else can read credentials', async () => {
    for (const role of ['feed', 'engine', 'pricing', 'operator'] as const) await refusedPublish(await as(role), ENGINE_COMMAND_SUBJECT);
    // The gateway's reply subjects (where credentials travel) are the gateway's alone.
    for (const role of ['feed', 'engine', 'pricing'] as const) await refusedSubscribe(await as(role), 'etf.reply.>');
    // The operator reads state on its own subject, where a credentials request is refused by the engine.
    const op = await as('operator');
    const admin = new EngineClient(op, 5000, { admin: true });
    const dump = await admin.call({ op: 'dump' });
    if (!dump.ok) throw new Error(dump.error.message);
    expect((dump.result as DumpResult).accounts.length).toBeGreaterThan(0);
    const creds = await admin.call({ op: 'credentials', username: 'team1' });
    expect(creds).toMatchObject({ ok: false, error: { code: 'forbidden' } });
    admin.close();
  });

  it('only the engine writes the journal; only the engine and the operator read it', async () => {
    for (const role of ['gateway', 'feed', 'pricing', 'operator'] as const) await refusedPublish(await as(role), JOURNAL_SUBJECT);
    for (const role of ['gateway', 'feed', 'pricing'] as const) {
      const jsm = await jetstreamManager(await as(role));
      await expect(jsm.streams.info(JOURNAL_STREAM)).rejects.toThrow();
    }
  });

  it('no role but the operator administers streams', async () => {
    for (const role of ['gateway', 'feed', 'pricing', 'engine'] as const) {
      const jsm = await jetstreamManager(await as(role));
      await expect(jsm.streams.purge(FILL_STREAM)).rejects.toThrow();
      await expect(jsm.streams.delete(JOURNAL_STREAM)).rejects.toThrow();
      await expect(jsm.streams.add({ name: 'ROGUE', subjects: ['rogue.>'] })).rejects.toThrow();
    }
    const jsm = await jetstreamManager(await as('operator'));
    expect((await jsm.streams.info(FILL_STREAM)).state.messages).toBeGreaterThan(0);
  });

  it('the operator reads published state but cannot act for a team, read credentials or forge any output', async () => {
    const op = await as('operator');
    await refusedSubscribe(op, 'etf.reply.>');
    await refusedSubscribe(op, ENGINE_COMMAND_SUBJECT);
    for (const subject of ['etf.reply.forged', '_INBOX_engine.forged', shardNames(0, 1).notices, 'etf.price.UNDY', '$KV.etf_prices.UNDY']) await refusedPublish(await as('operator'), subject);
  });

  it('the engine answers only on reply subjects: a command whose reply subject is the journal is ignored', async () => {
    const jsm = await jetstreamManager(await as('operator'));
    const before = (await jsm.streams.info(JOURNAL_STREAM)).state.last_seq;
    // The gateway may send commands; a forged reply subject must not make the engine write into a stream.
    const gw = await as('gateway');
    gw.publish(ENGINE_COMMAND_SUBJECT, encode({ v: 1, cmds: [{ id: 1, cmd: { op: 'ping' } }] }), { reply: JOURNAL_SUBJECT });
    await gw.flush();
    // A proper request right after is answered: the engine has handled the forged one by then.
    const client = new EngineClient(gw, 5000);
    expect((await client.call({ op: 'ping' })).ok).toBe(true);
    client.close();
    expect((await jsm.streams.info(JOURNAL_STREAM)).state.last_seq).toBe(before);
  });

  it('a role cannot listen to what is not its business', async () => {
    await refusedSubscribe(await as('feed'), shardNames(0, 1).notices);
    await refusedSubscribe(await as('pricing'), '>');
    await refusedSubscribe(await as('gateway'), '_INBOX_engine.>');
    // None of the refusals above disturbed the services.
    await until(async () => (await api(system.url).send('GET', '/health')).body.engine === true, 'health');
  });
});
