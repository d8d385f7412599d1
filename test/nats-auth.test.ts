import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import bcrypt from 'bcrypt';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { connect } from '@nats-io/transport-node';
import { prepareNatsAuth, routeCredentials, type NatsAuth } from '../src/launcher/nats-auth.js';
import { ConfigError } from '../src/config/config.js';
import { freePort, startNatsServer, type NatsServer } from '../src/launcher/nats-server.js';
import { connectNats } from '../src/shared/nats.js';
import { provisionStreams } from '../src/shared/streams.js';
import { startBridge, type BridgeHandle } from '../src/feed/service.js';
import { multicastSender } from '../src/feed/multicast.js';
import { EngineClient } from '../src/shared/engine-client.js';
import { decode, encode } from '../proto/codec.js';
import { SEALED_HASH_PREFIX, type DumpResult } from '../proto/engine.js';
import { JOURNAL_VERSION, type JournalBatch } from '../proto/journal.js';
import { BASKET_BUCKET, BBO_BUCKET, BBO_SUBJECT_WILDCARD, FEED_ALERT_SUBJECT, FEED_STATUS_SUBJECT, PRICE_BUCKET, PRICE_SUBJECT_WILDCARD, PRICING_STATUS_SUBJECT } from '../proto/marketdata.js';
import { FEED_BUCKET } from '../proto/feed.js';
import { consistencyCheck } from '../src/engine/check.js';
import { exportAudit } from '../src/engine/audit-export.js';
import { loadBaskets } from '../src/config/baskets.js';
import { randomBytes } from 'node:crypto';
import { CredentialsKey, credentialsKeyFile, loadCredentialsKey } from '../src/shared/credentials-key.js';
import { applyEvent, emptyState } from '../src/engine/state.js';
import { sealAccountHashes } from '../src/engine/roster.js';
import { startEngine, type EngineHandle } from '../src/engine/service.js';
import { claimNames } from '../src/engine/name-claims.js';
import { startGateway } from '../src/gateway/server.js';
import { ROLES, type Role } from '../proto/roles.js';
import { ENGINE_COMMAND_SUBJECT, FILL_STREAM, HELD_STREAM, heldSubject, JOURNAL_STREAM, JOURNAL_SUBJECT, REPLY_SUBJECT_WILDCARD, SESSION_SUBJECT, deskCardSubject, deskSampleSubject, fillSubject, SIGNIN_SUBJECT_WILDCARD, ENGINE_STARTED_SUBJECT_WILDCARD } from '../proto/subjects.js';
import { DeskRecorder } from '../src/pricing/desk.js';
import { startPricing } from '../src/pricing/service.js';
import { SNAPSHOT_STREAM } from '../proto/streams.js';
import { shardNames } from '../proto/shards.js';
import { api, quietLog, startSystem, tempDir, testConfig, until, type TestSystem } from './helpers/system.js';
import { awaitHoldingsSeq } from './helpers/events.js';
import { bridgeOpts, fillMsg, sendClearing, type Sender } from './helpers/feed.js';

let dir: ReturnType<typeof tempDir>;
let auth: NatsAuth;
let server: NatsServer;
let system: TestSystem;
let engine: EngineHandle;
let engineCfg: ReturnType<typeof testConfig>;
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

/** A bcrypt hash as it would sit in a msgpack or JSON payload. */
const BCRYPT = /\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}/;
const text = (data: Uint8Array) => Buffer.from(data).toString('latin1');

interface Read {
  stream: string;
  seq: number;
  how: 'msg.get' | 'direct.get' | 'consumer';
  data: Uint8Array;
}

/**
 * Every message of every stream, read every way the operator role can:
 * single-message gets, direct gets (streams that allow them) and an ordered consumer.
 */
async function everythingTheOperatorReads(nc: NatsConnection): Promise<Read[]> {
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const out: Read[] = [];
  for await (const si of jsm.streams.list()) {
    const stream = si.config.name;
    const { first_seq, last_seq, messages } = si.state;
    if (messages === 0) continue;
    for (let seq = first_seq; seq <= last_seq; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq });
      if (m) out.push({ stream, seq, how: 'msg.get', data: m.data });
      if (si.config.allow_direct) {
        const d = await jsm.direct.getMessage(stream, { seq });
        if (d) out.push({ stream, seq, how: 'direct.get', data: d.data });
      }
    }
    const consumer = await js.consumers.get(stream);
    const batch = await consumer.fetch({ max_messages: messages, expires: 5000 });
    for await (const m of batch) {
      out.push({ stream, seq: m.seq, how: 'consumer', data: m.data });
      if (m.info.pending === 0) break;
    }
  }
  return out;
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
  // Snapshots after every few events: the operator's reading of them is tested.
  engineCfg = { ...cfg, snapshotEvery: 2, nats: { ...cfg.nats, creds: auth.credsFile('engine') } };
  const gatewayCfg = { ...cfg, nats: { ...cfg.nats, creds: auth.credsFile('gateway') } };
  engine = await startEngine(engineCfg, server.url, quietLog, (err) => {
    throw err;
  });
  const gateway = await startGateway(gatewayCfg, server.url, quietLog);
  const url = `http://127.0.0.1:${gateway.port}`;
  system = { engine, gateway, engines: [engine], gateways: [gateway], url, urls: [url], close: async () => { await gateway.close(); await engine.close(); } };
  // The operator (any role that may create streams) could capture the bus's commands and replies in a stream of its own: it does here, to show they carry no hash either.
  await (await jetstreamManager(await as('operator'))).streams.add({ name: 'SPY', subjects: [`${ENGINE_COMMAND_SUBJECT}.>`, ENGINE_COMMAND_SUBJECT, REPLY_SUBJECT_WILDCARD], no_ack: true });
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
    // The desk's writer, as the pricing service runs it: it reads the accounts through the admin subject and writes the desk stream.
    const pricing = await as('pricing');
    const desk = await DeskRecorder.start(pricing, loadBaskets(undefined), quietLog);
    const applied = awaitHoldingsSeq(op, 1, 10);
    await sendClearing(sender, clearing, [3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((symbol, i) => [fillMsg(i + 1, 1, symbol, 2)]));
    await applied;
    const http = api(system.url);
    const created = await http.create('team1', 'team1pass', 1, 'UNDY');
    expect(created.status).toBe(200);
    expect((await http.holdings('team1', 'team1pass')).body.holdings.UNDY).toBe(1);
    // The gateway reads the conversion's scorecard from the desk stream.
    await until(async () => (await http.send('GET', `/requests/${created.body.request_id}`, { basic: ['team1', 'team1pass'] })).body.scorecard, 'the scorecard through the desk stream');
    // Its legs from the journal and the fill stream, which the desk reads: the UNDY sold on the exchange.
    await sendClearing(sender, clearing, [[fillMsg(11, 1, 13, -1)]]);
    await until(async () => (await http.send('GET', `/requests/${created.body.request_id}`, { basic: ['team1', 'team1pass'] })).body.scorecard?.legs_sold === 1, 'its legs sold, through the desk stream');
    expect(desk.stats.writeErrors).toBe(0);
    await desk.close();
    // Its read of the accounts, on the operators' read-only subject.
    const reader = new EngineClient(pricing, 5000, { admin: true });
    expect((await reader.call({ op: 'dump' })).ok).toBe(true);
    reader.close();
    // Pricing reads the bridge's books and writes prices.
    const { openBucket } = await import('../src/shared/streams.js');
    await (await openBucket(pricing, 'etf_prices')).put('TEST', encode({ ok: true }));
  });

  it('the pricing service, with its own credentials, reports to the gateway: /health shows it', async () => {
    const cfg = testConfig(dir.path);
    const pricing = await startPricing({ ...cfg, nats: { ...cfg.nats, creds: auth.credsFile('pricing') } }, server.url, quietLog);
    try {
      const heard = await until(async () => {
        const h = (await api(system.url).send('GET', '/health')).body;
        return h.pricing?.live && h;
      }, 'pricing on /health');
      expect(heard.pricing).toMatchObject({ live: true, publish_errors: 0, desk: { write_errors: 0 } });
      expect((heard.problems ?? []).join('\n')).not.toMatch(/pricing/);
    } finally {
      await pricing.close();
    }
  });

  it('only the pricing service writes the desk (chart samples and scorecards)', async () => {
    for (const role of ['gateway', 'engine', 'feed', 'operator'] as const) {
      const nc = await as(role);
      await refusedPublish(nc, deskCardSubject(1, 'r1'));
      await refusedPublish(nc, deskSampleSubject(1));
    }
  });

  it('only the feed bridge publishes fills and session markers', async () => {
    for (const role of ['gateway', 'engine', 'pricing', 'operator'] as const) {
      const nc = await as(role);
      await refusedPublish(nc, fillSubject(1));
      await refusedPublish(nc, SESSION_SUBJECT);
    }
  });

  it('only the feed bridge keeps held fills: no other role writes, reads or purges them', async () => {
    for (const role of ['gateway', 'engine', 'pricing', 'operator'] as const) await refusedPublish(await as(role), heldSubject('v-forged-1', 1));
    for (const role of ['gateway', 'engine', 'pricing'] as const) {
      const jsm = await jetstreamManager(await as(role));
      await expect(jsm.streams.info(HELD_STREAM)).rejects.toThrow();
      await expect(jsm.streams.purge(HELD_STREAM)).rejects.toThrow();
    }
    // The bridge's own role keeps a held run and purges it once decided.
    const feed = await as('feed');
    const entry = { v: 1, kind: 'msgs', verdict: { id: 'v-auth-1', kind: 'jump', status: 'pending', downtime: false, impostor: false, opened_at: 1, waiting: '' }, sender: '127.0.0.1:1', msgs: [{ type: 'fill', seq: 9, client_id: 1, symbol: 4, quantity: 1, price: 1, side: 1 }] };
    await jetstream(feed).publish(heldSubject('v-auth-1', 9), encode(entry));
    const jsm = await jetstreamManager(feed);
    expect((await jsm.streams.purge(HELD_STREAM, { filter: heldSubject('v-auth-1', 9) })).purged).toBe(1);
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

  it('only engines ask one another to reserve a roster username, and only they hear the answer', async () => {
    const n = shardNames(0, 1);
    for (const role of ['gateway', 'feed', 'pricing', 'operator'] as const) await refusedPublish(await as(role), n.names);
    for (const role of ['gateway', 'feed', 'pricing'] as const) await refusedSubscribe(await as(role), n.names);
    // A name an account holds already: answered with its holder, nothing journaled.
    const held = await claimNames(await as('engine'), [{ username: 'team1', clientId: 9 }], 1, 5000, quietLog);
    expect(held.get('team1')).toEqual({ username: 'team1', client_id: 1, source: 'roster' });
  });

  it('only the engine writes the journal; only the engine, the operator and the pricing service (the desk) read it', async () => {
    for (const role of ['gateway', 'feed', 'pricing', 'operator'] as const) await refusedPublish(await as(role), JOURNAL_SUBJECT);
    for (const role of ['gateway', 'feed'] as const) {
      const jsm = await jetstreamManager(await as(role));
      await expect(jsm.streams.info(JOURNAL_STREAM)).rejects.toThrow();
    }
    // The desk takes up from them what the engine's notices did not bring it.
    const pricing = await jetstreamManager(await as('pricing'));
    expect((await pricing.streams.info(JOURNAL_STREAM)).state.last_seq).toBeGreaterThan(0);
    expect((await pricing.streams.info(FILL_STREAM)).state.last_seq).toBeGreaterThan(0);
  });

  it('no role but the operator administers streams (the bridge purges only its own held runs)', async () => {
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

  it('every output has one writer: buckets, snapshots, notices, sign-in changes, engine starts, prices, books, feed and pricing status and alerts', async () => {
    const n = shardNames(0, 1);
    const writer: [subject: string, role: Role][] = [
      [`$KV.${PRICE_BUCKET}.UNDY`, 'pricing'],
      [`$KV.${BBO_BUCKET}.UNDY`, 'feed'],
      [`$KV.${FEED_BUCKET}.state`, 'feed'],
      [`$KV.${BASKET_BUCKET}.UNDY`, 'engine'],
      [n.snapshotChunk, 'engine'],
      [n.snapshotManifest, 'engine'],
      [n.notices, 'engine'],
      [n.signin, 'engine'],
      [n.started, 'engine'],
      [PRICE_SUBJECT_WILDCARD.replace('*', 'UNDY'), 'pricing'],
      [BBO_SUBJECT_WILDCARD.replace('*', '3'), 'feed'],
      [FEED_STATUS_SUBJECT, 'feed'],
      [PRICING_STATUS_SUBJECT, 'pricing'],
      [FEED_ALERT_SUBJECT, 'feed'],
    ];
    const conns = new Map<Role, NatsConnection>();
    for (const role of ROLES) conns.set(role, await as(role));
    for (const [subject, owner] of writer) for (const role of ROLES) if (role !== owner) await refusedPublish(conns.get(role)!, subject);
    // The engine's sign-in changes reach the gateway, which alone needs them; no other role hears them.
    const heard = new Promise<string>((resolve) => conns.get('gateway')!.subscribe(SIGNIN_SUBJECT_WILDCARD, { callback: (_, m) => resolve(m.subject) }));
    await conns.get('gateway')!.flush();
    conns.get('engine')!.publish(n.signin, encode({ v: 1, usernames: ['team1'] }));
    expect(await heard).toBe(n.signin);
    for (const role of ['feed', 'pricing', 'operator'] as const) await refusedSubscribe(await as(role), SIGNIN_SUBJECT_WILDCARD);
    // So does its announcement that it serves (the streams re-snapshot that shard's accounts).
    const started = new Promise<string>((resolve) => conns.get('gateway')!.subscribe(ENGINE_STARTED_SUBJECT_WILDCARD, { callback: (_, m) => resolve(m.subject) }));
    await conns.get('gateway')!.flush();
    conns.get('engine')!.publish(n.started, encode({ v: 1, shard: 0, shards: 1, ts: Date.now() }));
    expect(await started).toBe(n.started);
    for (const role of ['feed', 'pricing', 'operator'] as const) await refusedSubscribe(await as(role), ENGINE_STARTED_SUBJECT_WILDCARD);
  });

  it('only the engine and the operator read snapshots', async () => {
    for (const role of ['gateway', 'feed', 'pricing'] as const) {
      const jsm = await jetstreamManager(await as(role));
      await expect(jsm.streams.info(SNAPSHOT_STREAM)).rejects.toThrow();
      await expect(jsm.streams.getMessage(SNAPSHOT_STREAM, { seq: 1 })).rejects.toThrow();
    }
  });

  it('the operator reads no credential: every password hash in the journal, snapshots and on the bus is sealed', async () => {
    const http = api(system.url);
    expect((await http.register('spied', 'spiedpass1')).status).toBe(200);
    // Sign-ins make the engine send credentials (a registered team's, a roster team's) through the captured subjects.
    expect((await http.holdings('spied', 'spiedpass1')).status).toBe(200);
    expect((await http.holdings('team2', 'team2pass')).status).toBe(200);
    const op = await as('operator');
    // A snapshot taken after the registration (snapshotEvery 2) holds the account.
    const reads = await until(async () => {
      const all = await everythingTheOperatorReads(op);
      return all.some((r) => r.stream === SNAPSHOT_STREAM && text(r.data).includes('spied')) ? all : undefined;
    }, 'a snapshot with the registered team');
    for (const how of ['msg.get', 'direct.get', 'consumer'] as const) expect(reads.some((r) => r.how === how)).toBe(true);
    const streams = new Set(reads.map((r) => r.stream));
    for (const s of [JOURNAL_STREAM, SNAPSHOT_STREAM, FILL_STREAM, 'SPY']) expect(streams).toContain(s);
    // Nothing anywhere reads as a bcrypt hash...
    expect(reads.filter((r) => BCRYPT.test(text(r.data))).map((r) => `${r.stream} #${r.seq} (${r.how})`)).toEqual([]);
    // ...while the hashes are there, sealed: in the journal's account event, the snapshot, the register command and the credentials replies.
    const registered = reads
      .filter((r) => r.stream === JOURNAL_STREAM && r.how === 'consumer')
      .flatMap((r) => decode<JournalBatch>(r.data).events)
      .find((e) => e.t === 'account' && e.username === 'spied');
    expect(registered).toMatchObject({ source: 'register', passwordHash: expect.stringMatching(new RegExp(`^${SEALED_HASH_PREFIX}`)) });
    const sealedIn = (stream: string) => reads.filter((r) => r.stream === stream && text(r.data).includes(SEALED_HASH_PREFIX)).length;
    expect(sealedIn(SNAPSHOT_STREAM)).toBeGreaterThan(0);
    expect(sealedIn('SPY')).toBeGreaterThanOrEqual(3); // the register command, two credentials replies
  });

  it('a gateway with another credentials key says so (503 naming CREDENTIALS_KEY_FILE) instead of refusing the password', async () => {
    const cfg = testConfig(dir.path);
    const other = await startGateway({ ...cfg, credentialsKeyFile: join(dir.path, 'another.key'), nats: { ...cfg.nats, creds: auth.credsFile('gateway') } }, server.url, quietLog);
    try {
      const r = await api(`http://127.0.0.1:${other.port}`).holdings('spied', 'spiedpass1');
      expect(r.status).toBe(503);
      expect(r.body.error.message).toMatch(/CREDENTIALS_KEY_FILE/);
    } finally {
      await other.close();
    }
  });

  it('the operator tools work with the operator role: the consistency check and the audit export', async () => {
    const op = await as('operator');
    const admin = new EngineClient(op, 5000, { admin: true });
    const dump = await admin.call({ op: 'dump' });
    admin.close();
    if (!dump.ok) throw new Error(dump.error.message);
    const instruments = loadBaskets(undefined);
    const report = await consistencyCheck(op, dump.result as DumpResult, instruments, quietLog);
    expect(report.ok).toBe(true);
    const lines: string[] = [];
    expect(await exportAudit(op, instruments, (l) => lines.push(l))).toBeGreaterThan(0);
    expect(lines.join('\n')).toContain('spied');
    expect(lines.some((l) => BCRYPT.test(l))).toBe(false);
  });

  it('a journal from before sealing still replays: its team signs in, and the engine sends its hash sealed from then on', async () => {
    await engine.close();
    // An account event as the engine wrote it before sealing: the bcrypt hash in clear.
    const legacy: JournalBatch = {
      v: JOURNAL_VERSION,
      events: [{ t: 'account', clientId: 50, username: 'oldteam', source: 'register', passwordHash: bcrypt.hashSync('oldteampass', 4), ts: Date.now() }],
    };
    await jetstream(await as('engine')).publish(JOURNAL_SUBJECT, encode(legacy));
    engine = await startEngine(engineCfg, server.url, quietLog, (err) => {
      throw err;
    });
    const jsm = await jetstreamManager(await as('operator'));
    const before = (await jsm.streams.info('SPY')).state.last_seq;
    const http = api(system.url);
    expect((await http.holdings('oldteam', 'oldteampass')).status).toBe(200);
    expect((await http.holdings('oldteam', 'wrong-password')).status).toBe(401);
    const after = (await jsm.streams.info('SPY')).state.last_seq;
    const sent: string[] = [];
    for (let seq = before + 1; seq <= after; seq++) sent.push(text((await jsm.streams.getMessage('SPY', { seq }))!.data));
    expect(sent.some((t) => t.includes(SEALED_HASH_PREFIX))).toBe(true);
    expect(sent.some((t) => BCRYPT.test(t))).toBe(false);
    // The sealed hash opens only with the system's key, and only for its own account.
    const key = loadCredentialsKey(credentialsKeyFile(engineCfg));
    const sealed = key.seal('$2b$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234', 'oldteam');
    expect(key.open(sealed, 'oldteam')).toMatch(BCRYPT);
    expect(key.open(sealed, 'team1')).toBeNull();
  });
});

describe('sealing at engine start (src/engine/roster.ts sealAccountHashes)', () => {
  it('seals clear hashes (roster, older journals) once, and refuses to start with a key that does not open the sealed ones', () => {
    const state = emptyState(loadBaskets(undefined));
    const clear = bcrypt.hashSync('oldteampass', 4);
    applyEvent(state, { t: 'account', clientId: 7, username: 'oldteam', source: 'register', passwordHash: clear, ts: 0 });
    const key = new CredentialsKey(randomBytes(32), 'the-key');
    expect(sealAccountHashes(state, key)).toBe(1);
    const sealed = state.byUsername.get('oldteam')!.passwordHash;
    expect(sealed.startsWith(SEALED_HASH_PREFIX)).toBe(true);
    expect(key.open(sealed, 'oldteam')).toBe(clear);
    expect(sealAccountHashes(state, key)).toBe(0);
    expect(() => sealAccountHashes(state, new CredentialsKey(randomBytes(32), 'another-key'))).toThrow(/another-key.*oldteam.*CREDENTIALS_KEY_FILE/);
  });
});

describe('the generated NATS credentials', () => {
  it('are kept across starts; a file that is not what the launcher wrote is an error naming it, never silently replaced', () => {
    const d = tempDir('etf-auth-files-');
    try {
      const where = join(d.path, 'nats-auth');
      const first = prepareNatsAuth(where);
      const engineFile = first.credsFile('engine');
      const kept = readFileSync(engineFile, 'utf8');
      prepareNatsAuth(where);
      expect(readFileSync(engineFile, 'utf8')).toBe(kept);
      const route = routeCredentials(where);
      expect(routeCredentials(where)).toEqual(route);
      for (const bad of ['{"user": "engine", "pass', '{"user": "gateway", "password": "x"}', '']) {
        writeFileSync(engineFile, bad);
        expect(() => prepareNatsAuth(where)).toThrow(ConfigError);
        expect(() => prepareNatsAuth(where)).toThrow(engineFile);
        expect(readFileSync(engineFile, 'utf8')).toBe(bad);
      }
      writeFileSync(join(where, 'route.json'), 'not json');
      expect(() => routeCredentials(where)).toThrow(join(where, 'route.json'));
    } finally {
      d.remove();
    }
  });
});
