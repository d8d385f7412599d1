import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { CONFIG_EXIT_CODE, PROJECT_ROOT } from '../src/config/config.js';
import { encode } from '../proto/codec.js';
import type { SessionMarker } from '../proto/fill.js';
import type { DumpResult } from '../proto/engine.js';
import type { JournalEvent } from '../proto/journal.js';
import { JOURNAL_STREAM, JOURNAL_SUBJECT, SESSION_SUBJECT } from '../proto/subjects.js';
import { shardNames } from '../proto/shards.js';
import { loadBaskets } from '../src/config/baskets.js';
import { consistencyCheck } from '../src/engine/check.js';
import { EngineClient } from '../src/shared/engine-client.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { ensureFillStream, ensureJournalStream } from '../src/shared/streams.js';
import { awaitHoldings, awaitHoldingsSeq } from './helpers/events.js';
import {
  api,
  fillsFor,
  killProcess,
  natsClient,
  publishFills,
  quietLog,
  spawnEngine,
  startTestNats,
  tempDir,
  testConfig,
  undyBasket,
  until,
  writeConfigFile,
} from './helpers/system.js';

/**
 * Start-up rebuilds the books from a snapshot, the journal and the fill
 * stream: these are the decisions whose outcome depends on where they fell
 * among the fills (an exchange session reset zeroes; a fill for a client_id
 * not registered yet is ignored), and the records a replay cannot read.
 */
type Engine = Awaited<ReturnType<typeof spawnEngine>>;
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

const resetMarker = (session: number): SessionMarker => ({ v: 1, kind: 'exchange_restart', reset: true, session, detail: 'test: new exchange session', ts: Date.now() });

async function system(roster = '1 team1 team1pass\n2 team2 team2pass\n') {
  const nats = await startTestNats();
  const dir = tempDir();
  // The server gone before its store is removed: a server still writing made rmdir fail (ENOTEMPTY) in a full run.
  cleanups.push(async () => {
    await nats.stop();
    nats.remove();
    dir.remove();
  });
  const cfg = testConfig(dir.path, { requestTimeoutMs: 2000, roster });
  const nc = await natsClient(nats.url);
  cleanups.push(() => nc.close());
  return { nats, dir, cfg, nc };
}

async function dumpOf(nc: NatsConnection): Promise<DumpResult> {
  const client = new EngineClient(nc, 10_000);
  try {
    const r = await client.call({ op: 'dump' });
    if (!r.ok) throw new Error(r.error.message);
    return r.result as DumpResult;
  } finally {
    client.close();
  }
}

describe('replay puts every decision back among the fills where it was made', () => {
  let s: Awaited<ReturnType<typeof system>>;
  let engine: Engine;
  let gateway: GatewayHandle;
  let http: ReturnType<typeof api>;
  beforeAll(async () => {
    s = await system();
    engine = await spawnEngine(s.nats.url, s.cfg);
    cleanups.push(() => killProcess(engine));
    gateway = await startGateway(s.cfg, s.nats.url, quietLog);
    cleanups.push(() => gateway.close());
    http = api(`http://127.0.0.1:${gateway.port}`);
  });

  const restart = async () => {
    await killProcess(engine, 'SIGKILL');
    engine = await spawnEngine(s.nats.url, s.cfg);
  };

  it('a create acknowledged after an exchange session reset is in the holdings after a SIGKILL, and the check agrees', async () => {
    let applied = awaitHoldingsSeq(s.nc, 1, 10);
    await publishFills(s.nc, fillsFor(1, undyBasket(10)));
    await applied;
    const reset = awaitHoldings(s.nc, 1, (c) => c.cause === 'session_reset', 'the session reset');
    await jetstream(s.nc).publish(SESSION_SUBJECT, encode(resetMarker(1)), { msgID: 'test-session-1' });
    await reset;
    applied = awaitHoldingsSeq(s.nc, 1, 10);
    await publishFills(s.nc, fillsFor(1, undyBasket(10)));
    await applied;
    expect((await http.create('team1', 'team1pass', 5, 'UNDY')).status).toBe(200);
    const before = (await http.holdings('team1', 'team1pass')).body.holdings;
    expect(before.UNDY).toBe(5);

    await restart();
    expect((await http.holdings('team1', 'team1pass')).body.holdings).toEqual(before);
    const report = await consistencyCheck(s.nc, await dumpOf(s.nc), loadBaskets(undefined), quietLog);
    expect(report.mismatches).toEqual([]);
    expect(report.acknowledged).toEqual([]);
    expect(report.ok).toBe(true);
  });

  it('a registration skips a client_id the exchange has filled, and neither it nor that id\'s fills change after a SIGKILL', async () => {
    // The next registration would take client_id 3: a fill for it now belongs to nobody, and is set aside for a roster line naming 3.
    await publishFills(s.nc, [{ seq: 900, client_id: 3, symbol: 3, side: 1, quantity: 7, price: 100 }]);
    const jsm = await jetstreamManager(s.nc);
    const last = (await jsm.streams.info('NDFEX_FILLS')).state.last_seq;
    await until(async () => (await dumpOf(s.nc)).fill_seq >= last, 'the engine to pass the fill');
    const reg = await http.register('late', 'latepass1');
    expect(reg.status).toBe(200);
    // 3 is the exchange's: its next fills would have been this new account's.
    expect(reg.body.client_id).toBe(4);
    expect((await http.holdings('late', 'latepass1')).body.holdings).toEqual({});

    await restart();
    expect((await http.holdings('late', 'latepass1')).body.holdings).toEqual({});
    const report = await consistencyCheck(s.nc, await dumpOf(s.nc), loadBaskets(undefined), quietLog);
    expect(report.ok).toBe(true);
  });
});

describe('the consistency check', () => {
  it('names an acknowledged create that a replay without fill positions (as every engine before them did) put before a reset', async () => {
    const s = await system('1 team1 team1pass\n');
    await ensureJournalStream(s.nc, shardNames(0, 1));
    await ensureFillStream(s.nc);
    const js = jetstream(s.nc);
    // What an engine that did not record fill positions journaled: the account, then (after a reset and new fills) a create of 5 UNDY.
    const account: JournalEvent = { t: 'account', clientId: 1, username: 'team1', source: 'roster', ts: 1 };
    await js.publish(JOURNAL_SUBJECT, encode({ v: 2, events: [account] }));
    await publishFills(s.nc, fillsFor(1, undyBasket(10)));
    await js.publish(SESSION_SUBJECT, encode(resetMarker(1)));
    await publishFills(s.nc, fillsFor(1, undyBasket(10)));
    const held = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12].flatMap((sym) => [sym, 5]).concat([13, 5]);
    const create: JournalEvent = { t: 'conversion', requestId: 1, op: 'create', clientId: 1, etf: 'UNDY', amount: 5, held, ts: 2 };
    await js.publish(JOURNAL_SUBJECT, encode({ v: 2, events: [create] }));

    // The engine replays those records as it always has (journal first), so the create meets the reset again and is zeroed.
    const engine = await spawnEngine(s.nats.url, s.cfg);
    cleanups.push(() => killProcess(engine));
    const dump = await dumpOf(s.nc);
    expect(dump.accounts.find((a) => a.client_id === 1)?.positions.find(([sym]) => sym === 13)).toBeUndefined();

    const report = await consistencyCheck(s.nc, dump, loadBaskets(undefined), quietLog);
    expect(report.ok).toBe(false);
    expect(report.mismatches).toHaveLength(1);
    expect(report.mismatches[0]!.client_id).toBe(1);
    expect(report.mismatches[0]!.differences).toContainEqual({ ticker: 'UNDY', live: 0, acknowledged: 5 });

    // The operator's tool: exit 1, the account and the difference named.
    const tool = await run(join(PROJECT_ROOT, 'dist/src/tools/check.js'), { NATS_URL: s.nats.url, CONFIG_FILE: writeConfigFile(s.cfg), DATA_DIR: s.dir.path });
    expect(tool.code, tool.out).toBe(1);
    expect(tool.out).toContain('team1 (client 1): holdings differ from what was acknowledged');
    expect(tool.out).toContain('UNDY 0 held, 5 acknowledged');
    expect(tool.out).toContain('INCONSISTENT');
  });
});

/** Runs a node script to its end: exit code and everything it wrote. */
async function run(script: string, env: Record<string, string>): Promise<{ code: number | null; out: string; lines: string[] }> {
  const child = spawn(process.execPath, [script], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => lines.push(l));
  createInterface({ input: child.stderr! }).on('line', (l) => lines.push(l));
  const code = await new Promise<number | null>((r) => child.once('close', r));
  return { code, out: lines.join('\n'), lines };
}

describe('a journal record the engine cannot replay', () => {
  /** An engine that wrote its roster and stopped cleanly (a snapshot of everything): what a start replays is what the test appends. */
  async function stopped() {
    const s = await system();
    const first = await spawnEngine(s.nats.url, s.cfg);
    await killProcess(first, 'SIGTERM');
    return s;
  }

  it('stops start-up with one line naming it and what to do, and exit code 2 (the launcher does not restart it)', async () => {
    const s = await stopped();
    const ack = await jetstream(s.nc).publish(JOURNAL_SUBJECT, encode({ events: [] }));
    const failed = await run(join(PROJECT_ROOT, 'dist/src/engine/main.js'), { NATS_URL: s.nats.url, CONFIG_FILE: writeConfigFile(s.cfg), LOG_LEVEL: 'info' });
    expect(failed.code, failed.out).toBe(CONFIG_EXIT_CODE);
    const fatal = failed.lines.filter((l) => l.includes('"level":60'));
    expect(fatal, failed.out).toHaveLength(1);
    expect(fatal[0]).toContain(`journal record ${ack.seq} of stream ${JOURNAL_STREAM}`);
    expect(fatal[0]).toContain('unsupported version');
    expect(fatal[0]).toContain(`nats stream rmm ${JOURNAL_STREAM} ${ack.seq}`);
  });

  it('whatever is wrong with it (not msgpack, a later version, no list of events, an event for no account): one line each, and once removed the engine starts', async () => {
    const s = await stopped();
    const js = jetstream(s.nc);
    const jsm = await jetstreamManager(s.nc);
    const env = { NATS_URL: s.nats.url, CONFIG_FILE: writeConfigFile(s.cfg), LOG_LEVEL: 'info' };
    const conversion: JournalEvent = { t: 'conversion', requestId: 77, op: 'create', clientId: 99, etf: 'UNDY', amount: 1, held: [], ts: 1 };
    const poisons: Array<[Uint8Array, string]> = [
      [new Uint8Array([0xc1, 0xff, 0x00]), 'undecodable'],
      [encode({ v: 99, events: [] }), 'unsupported version 99'],
      [encode({ v: 2, events: 'all of them' }), 'events is not a list of events'],
      [encode({ v: 2, events: [conversion] }), 'conversion for unknown client_id 99'],
    ];
    for (const [data, why] of poisons) {
      const ack = await js.publish(JOURNAL_SUBJECT, data);
      const failed = await run(join(PROJECT_ROOT, 'dist/src/engine/main.js'), env);
      expect(failed.code, failed.out).toBe(CONFIG_EXIT_CODE);
      const fatal = failed.lines.filter((l) => l.includes('"level":60'));
      expect(fatal, failed.out).toHaveLength(1);
      expect(fatal[0]).toContain(`journal record ${ack.seq} of stream ${JOURNAL_STREAM}`);
      expect(fatal[0]).toContain(why);
      await jsm.streams.deleteMessage(JOURNAL_STREAM, ack.seq);
    }
    const engine = await spawnEngine(s.nats.url, s.cfg);
    cleanups.push(() => killProcess(engine));
    const gateway = await startGateway(s.cfg, s.nats.url, quietLog);
    cleanups.push(() => gateway.close());
    expect((await api(`http://127.0.0.1:${gateway.port}`).register('after2', 'afterpass1')).status).toBe(200);
  }, 90_000);

  it('once removed (the journal now ends in a deleted record), the engine starts at once and journals after it', async () => {
    const s = await stopped();
    const ack = await jetstream(s.nc).publish(JOURNAL_SUBJECT, encode({ events: [] }));
    await (await jetstreamManager(s.nc)).streams.deleteMessage(JOURNAL_STREAM, ack.seq);
    // Before, the replay waited for ever for the deleted sequence, without a word.
    const engine = await spawnEngine(s.nats.url, s.cfg);
    cleanups.push(() => killProcess(engine));
    expect(engine.startLog.map((l) => l.msg)).toContain('the journal ends in deleted records: writing after them');
    const gateway = await startGateway(s.cfg, s.nats.url, quietLog);
    cleanups.push(() => gateway.close());
    expect((await api(`http://127.0.0.1:${gateway.port}`).register('after', 'afterpass1')).status).toBe(200);
    expect((await dumpOf(s.nc)).journal_seq).toBeGreaterThan(ack.seq);
  }, 60_000);
});
