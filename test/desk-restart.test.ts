import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { decode, decodeRecords, encode, encodeRecords } from '../proto/codec.js';
import type { CommandBatch } from '../proto/engine.js';
import type { HoldingsNotice } from '../proto/holdings.js';
import { shardNames } from '../proto/shards.js';
import { BBO_BUCKET, PRICING_STATUS_SUBJECT } from '../proto/marketdata.js';
import { DESK_CURSOR_SUBJECT, DESK_STREAM, SESSION_SUBJECT, deskLegsSubject } from '../proto/subjects.js';
import { sessionMarkerMsgId } from '../proto/feed.js';
import type { SessionMarker } from '../proto/fill.js';
import type { DeskCursor } from '../proto/desk.js';
import { replayJournal } from '../src/engine/journal.js';
import type { ChartsBody, Scorecard } from '../proto/http.js';
import type { PnlSplitEntry } from '../proto/audit.js';
import { PROJECT_ROOT } from '../src/config/config.js';
import { startService, type ServiceProcess } from '../src/shared/service-process.js';
import { DeskHistory } from '../src/shared/desk-history.js';
import { readStream } from '../src/shared/stream-reader.js';
import { openBucket } from '../src/shared/streams.js';
import { awaitHoldings } from './helpers/events.js';
import { buy, testConfig, undyBasket, until, useSystem, writeConfigFile } from './helpers/system.js';
import { UNDY, bbo } from './helpers/prices.js';

const run = promisify(execFile);
const RULES = { fees: { create: { fixed: 5, per_unit: 2 }, redeem: { fixed: 0, per_unit: 1 } } };
const overrides = { chartSampleMs: 100, rules: RULES };
const TEAM1 = 1;
const team1 = ['team1', 'team1pass'] as const;
/** The basket's components (symbols 3..12) at mids 103..112, UNDY at 1100: a create of n earns n × (1100 − 1075) − fee at mid. */
const COMPONENTS = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
const MIDS: Record<number, number> = { ...Object.fromEntries(COMPONENTS.map((s) => [s, 100 + s])), [UNDY]: 1100 };
const createFee = (n: number) => 5 + 2 * n;

/**
 * The pricing service's desk under the product's rule: a stop, a crash
 * (SIGKILL) or a cut connection to NATS at any moment loses no conversion's
 * scorecard and no sell of its legs. The engine and the gateway run in this
 * process; the pricing service is its own OS process, killed and started
 * again as the launcher's supervisor would.
 */
/**
 * A system (engine shards and a gateway in this process) and the pricing
 * service as its own OS process, started, stopped and killed as the
 * launcher's supervisor would; the pricing process is stopped after each test.
 */
function useDesk(overrides: Parameters<typeof testConfig>[1]) {
  const f = useSystem(overrides);
  let pricing: ServiceProcess<unknown> | null = null;

  /**
   * The pricing service as the launcher runs it, on `natsUrl` (the system's
   * server, or a relay to it); resolves once its desk charts team1 at the
   * marks (it has read the books and the accounts: a conversion now is scored).
   */
  async function startPricing(natsUrl = f.nats.url): Promise<ServiceProcess<unknown>> {
    const since = Date.now();
    pricing = await startService({
      name: 'pricing',
      args: [join(PROJECT_ROOT, 'dist/src/pricing/main.js')],
      env: { ...process.env, NATS_URL: natsUrl, CONFIG_FILE: writeConfigFile(testConfig(f.dir.path, overrides)), LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn' },
      ready: 'message',
      ...(process.env.TEST_LOG_LEVEL ? {} : { onLine: () => {} }),
      timeoutMs: 20_000,
    });
    await charted(since);
    return pricing;
  }

  /** Until the desk charts team1's P&L after `since` as its cash and positions at the mids now. */
  async function charted(since: number): Promise<void> {
    const h = (await f.http.holdings(...team1)).body;
    const pnl = (h.positions as { symbol: number; quantity: number }[]).reduce((v, x) => v + x.quantity * MIDS[x.symbol]!, h.cash as number);
    await until(async () => {
      const b = (await f.http.send('GET', '/charts', { query: { team: 'team1', since: String(since) } })).body as ChartsBody;
      return b.teams[0]?.pnl.at(-1) === pnl || undefined;
    }, `team1's P&L charted at ${pnl}`);
  }

  async function kill(p: ServiceProcess<unknown>): Promise<void> {
    p.child.kill('SIGKILL');
    await p.exited;
  }

  beforeAll(async () => {
    const bbos = await openBucket(f.nc, BBO_BUCKET);
    for (const [s, m] of Object.entries(MIDS)) await bbos.put(s, encode(bbo(Number(s), m)));
    // Something for each reset to take, so that the team hears it.
    await buy(f.nc, TEAM1, { [UNDY]: 1 });
  });

  afterEach(async () => {
    if (pricing) await pricing.stop();
    pricing = null;
  });

  /** Every card in the desk stream now, as a gateway or the export reads them. */
  async function cards(): Promise<DeskHistory> {
    const held = new DeskHistory(Infinity);
    await (await readStream(f.nc, DESK_STREAM, 1, (m) => held.apply(m.subject, m.data), { follow: false })).caughtUp;
    return held;
  }
  const cardOf = async (requestId: string, clientId = TEAM1): Promise<Scorecard | undefined> => (await cards()).scorecard(clientId, requestId);
  const cardWhen = (requestId: string, ok: (c: Scorecard) => boolean, what: string, clientId = TEAM1): Promise<Scorecard> =>
    until(async () => {
      const c = await cardOf(requestId, clientId);
      return c && ok(c) ? c : undefined;
    }, `${requestId} of client ${clientId}: ${what}`);
  const create = async (n: number, team: readonly [string, string] = team1): Promise<string> => {
    const r = await f.http.create(...team, n);
    expect(r.status).toBe(200);
    return r.body.request_id as string;
  };
  const sell = (quantities: Record<number, number>, clientId = TEAM1) => buy(f.nc, clientId, Object.fromEntries(Object.entries(quantities).map(([s, q]) => [s, -q])));
  return { f, startPricing, charted, kill, cards, cardOf, cardWhen, create, sell };
}

describe('the desk across a stop, a crash or a cut connection of the pricing service', () => {
  const { f, startPricing, charted, kill, cards, cardOf, cardWhen, create, sell } = useDesk(overrides);
  let relay: Relay | null = null;
  let session = 1;

  // Every test in an exchange session of its own: the last one's unsold legs went with the reset, so they take no sell.
  beforeEach(async () => {
    session++;
    const reset = awaitHoldings(f.nc, TEAM1, (c) => c.cause === 'session_reset', 'the reset');
    const marker: SessionMarker = { v: 1, kind: 'exchange_restart', reset: true, session, detail: 'test: a new exchange session', ts: Date.now() };
    await jetstream(f.nc).publish(SESSION_SUBJECT, encode(marker), { msgID: sessionMarkerMsgId(session) });
    await reset;
    await buy(f.nc, TEAM1, undyBasket(10));
  });

  afterEach(async () => {
    await relay?.close();
    relay = null;
  });

  const scored = (n: number) => ({ op: 'create', amount: n, fee: createFee(n), etf_mid: 1100, edge: n * 25 - createFee(n) });
  const missed = { etf_mid: null, edge: null, edge_per_unit: null, quoted_edge: null, unscored: 'missed' };

  it('a conversion made while pricing is stopped gets a card marked missed once it is back, with its fee; sells made meanwhile count', async () => {
    let p = await startPricing();
    const before = await create(2);
    expect(await cardWhen(before, (c) => c.edge !== null, 'scored')).toMatchObject({ ...scored(2), legs_sold: 0 });

    await p.stop();
    const whileStopped = await create(1);
    // And a redeem of one unit: its legs are the basket, from the journal's record (no notice says so).
    const redeemed = await f.http.redeem(...team1, 1);
    expect(redeemed.status).toBe(200);
    // One UNDY sold while stopped: the oldest conversion's.
    await sell({ [UNDY]: 1 });

    p = await startPricing();
    const card = await cardWhen(whileStopped, () => true, 'a card');
    expect(card).toMatchObject({ ...missed, op: 'create', amount: 1, fee: createFee(1), legs_sold: 0 });
    expect(await cardWhen(redeemed.body.request_id, () => true, 'a card')).toMatchObject({ ...missed, op: 'redeem', amount: 1, fee: 1, legs_sold: 0 });
    // Scored before the stop, and left so; the sell made meanwhile is its.
    expect(await cardWhen(before, (c) => c.legs_sold === 0.5, 'half sold')).toMatchObject(scored(2));
    // As the team sees it, once the gateway has read it from the stream.
    const entry = await until(async () => {
      const e = (await f.http.send('GET', `/requests/${whileStopped}`, { basic: [...team1] })).body;
      return e.scorecard ? e : undefined;
    }, 'the scorecard on /requests');
    expect(entry.scorecard).toMatchObject({ unscored: 'missed', edge: null, fee: createFee(1) });
    // And as the operator sees it: this run of the service recorded two conversions as missed.
    await until(async () => (await f.http.send('GET', '/health')).body.pricing?.desk?.missed === 2 || undefined, 'two missed on /health');
    expect(await (await fetch(`${f.sys.url}/metrics`)).text()).toMatch(/^etf_pricing_desk_missed_total 2$/m);

    // Its legs are followed from the journal: the rest sold, oldest first.
    await sell({ [UNDY]: 2 });
    await cardWhen(whileStopped, (c) => c.legs_sold === 1, 'sold');
    expect((await cardOf(before))?.legs_sold).toBe(1);
    await sell(Object.fromEntries(COMPONENTS.map((s) => [s, 1])));
    await cardWhen(redeemed.body.request_id, (c) => c.legs_sold === 1, 'its basket sold');

    // The grading export counts it as a conversion without an edge.
    const split = (await exportLines()).find((l): l is PnlSplitEntry => l.kind === 'pnl_split' && l.client_id === TEAM1)!;
    expect(split).toMatchObject({ conversions: 3, unscored: 2, conversion_edge: 2 * 25 - createFee(2), legs_sold: 1 });
  });

  it('SIGKILLed between hearing a conversion and storing its card, it records the conversion as missed once started again', async () => {
    let p = await startPricing();
    const statuses = f.nc.subscribe(PRICING_STATUS_SUBJECT);
    const jsm = await jetstreamManager(f.nc);
    const { config } = await jsm.streams.info(DESK_STREAM);
    // The stream refuses every write of the desk's: the card is heard, scored, and not stored.
    await jsm.streams.update(DESK_STREAM, { ...config, max_msg_size: 16 });
    let lost: string;
    try {
      lost = await create(1);
      for await (const m of statuses) if (decode<{ desk?: { write_errors: number } }>(m.data).desk!.write_errors > 0) break;
      await kill(p);
    } finally {
      statuses.unsubscribe();
      await jsm.streams.update(DESK_STREAM, config);
    }
    p = await startPricing();
    expect(await cardWhen(lost, () => true, 'a card')).toMatchObject({ ...missed, op: 'create', amount: 1, fee: createFee(1) });
    await sell({ [UNDY]: 1 });
    await cardWhen(lost, (c) => c.legs_sold === 1, 'sold');
  });

  it('SIGKILLed after storing cards but before its cursor, it reads on from the older cursor and counts nothing twice', async () => {
    let p = await startPricing();
    const first = await create(1);
    await cardWhen(first, (c) => c.edge !== null, 'scored');
    // Its place as it stood then: what a crash right after the writes below, and before their cursor, leaves.
    const jsm = await jetstreamManager(f.nc);
    const oldCursor = (await until(() => jsm.streams.getMessage(DESK_STREAM, { last_by_subj: DESK_CURSOR_SUBJECT }), 'a cursor'))!.data;
    const second = await create(2);
    await sell({ [UNDY]: 2 });
    await cardWhen(second, (c) => c.legs_sold === 0.5, 'half sold');
    expect((await cardOf(first))?.legs_sold).toBe(1);
    await kill(p);
    await jetstream(f.nc).publish(DESK_CURSOR_SUBJECT, oldCursor);

    p = await startPricing();
    // Live again: a new conversion scored. Everything the older cursor made it read again was written by then.
    const third = await create(1);
    await cardWhen(third, (c) => c.edge !== null, 'scored');
    const held = await cards();
    expect(held.scorecard(TEAM1, first)).toMatchObject({ ...scored(1), legs_sold: 1 });
    expect(held.scorecard(TEAM1, first)!.unscored).toBeUndefined();
    // The sale read again is not counted again.
    expect(held.scorecard(TEAM1, second)).toMatchObject({ ...scored(2), legs_sold: 0.5 });
    await sell({ [UNDY]: 2 });
    await cardWhen(third, (c) => c.legs_sold === 1, 'sold');
    expect((await cardOf(second))?.legs_sold).toBe(1);
  });

  it('SIGKILLed while a conversion decided before a reset waited for its notice, it does not give that conversion back the legs the reset took', async () => {
    let p = await startPricing();
    const old = await create(2);
    await cardWhen(old, (c) => c.edge !== null, 'scored');
    session++;
    const reset = awaitHoldings(f.nc, TEAM1, (c) => c.cause === 'session_reset', 'the reset');
    const marker: SessionMarker = { v: 1, kind: 'exchange_restart', reset: true, session, detail: 'test: a new exchange session', ts: Date.now() };
    const resetSeq = (await jetstream(f.nc).publish(SESSION_SUBJECT, encode(marker), { msgID: sessionMarkerMsgId(session) })).seq;
    await reset;
    await buy(f.nc, TEAM1, undyBasket(1));
    const jsm = await jetstreamManager(f.nc);
    const cursor = await until(async () => {
      const m = await jsm.streams.getMessage(DESK_STREAM, { last_by_subj: DESK_CURSOR_SUBJECT });
      const c = m ? decode<DeskCursor>(m.data) : undefined;
      return c && c.fills >= resetSeq ? c : undefined;
    }, 'a cursor past the reset');
    await kill(p);
    // What a SIGKILL leaves when the reset was read before the conversion's journal record (so its legs were never
    // opened, and the team's record never had them) and the conversion's card waited for its notice: a cursor past the
    // reset and before that record, and no legs record for the team.
    let oldSeq = 0;
    await replayJournal(f.nc, 1, (events, seq) => {
      if (events.some((e) => e.t === 'conversion' && `r${e.requestId}` === old)) oldSeq = seq;
    });
    await jetstream(f.nc).publish(DESK_CURSOR_SUBJECT, encode({ ...cursor, journal: [oldSeq - 1] }));
    await jsm.streams.purge(DESK_STREAM, { filter: deskLegsSubject(TEAM1) });

    p = await startPricing();
    const now = await create(1);
    await sell({ [UNDY]: 1 });
    await cardWhen(now, (c) => c.legs_sold === 1, 'sold: the old conversion has no legs left to take the sell');
    expect((await cardOf(old))?.legs_sold).toBe(0);
  });

  it('restarted while legs are being sold (stopped, or SIGKILLed with sells made while down), it goes on counting them', async () => {
    let p = await startPricing();
    const stopped = await create(2);
    await sell({ [UNDY]: 1 });
    await cardWhen(stopped, (c) => c.legs_sold === 0.5, 'half sold');
    await p.stop();
    p = await startPricing();
    await sell({ [UNDY]: 1 });
    await cardWhen(stopped, (c) => c.legs_sold === 1, 'sold after the restart');

    const killed = await create(4);
    await sell({ [UNDY]: 1 });
    await cardWhen(killed, (c) => c.legs_sold === 0.25, 'a quarter sold');
    await kill(p);
    await sell({ [UNDY]: 1 });
    p = await startPricing();
    await cardWhen(killed, (c) => c.legs_sold === 0.5, 'the sell made while it was down counted');
    await sell({ [UNDY]: 2 });
    await cardWhen(killed, (c) => c.legs_sold === 1, 'sold');
    expect(await cardOf(killed)).toMatchObject(scored(4));
  });

  it('an exchange reset while it is down takes the unsold legs: a sell of the new session is not counted against them', async () => {
    let p = await startPricing();
    const old = await create(2);
    await cardWhen(old, (c) => c.edge !== null, 'scored');
    await p.stop();
    session++;
    const reset = awaitHoldings(f.nc, TEAM1, (c) => c.cause === 'session_reset', 'the reset');
    const marker: SessionMarker = { v: 1, kind: 'exchange_restart', reset: true, session, detail: 'test: reset while pricing is down', ts: Date.now() };
    await jetstream(f.nc).publish(SESSION_SUBJECT, encode(marker), { msgID: sessionMarkerMsgId(session) });
    await reset;
    await buy(f.nc, TEAM1, undyBasket(1));
    p = await startPricing();
    const now = await create(1);
    await sell({ [UNDY]: 1 });
    await cardWhen(now, (c) => c.legs_sold === 1, 'sold');
    expect((await cardOf(old))?.legs_sold).toBe(0);
  });

  it('cut from NATS while a conversion is made and legs are sold: once back, the conversion is recorded as missed, the sell counted, and the P&L charted from the positions as they are', async () => {
    relay = await Relay.start(f.nats.port);
    await startPricing(`nats://127.0.0.1:${relay.port}`);
    const before = await create(1);
    await cardWhen(before, (c) => c.edge !== null, 'scored');

    relay.cut();
    const whileCut = await create(2);
    await sell({ [UNDY]: 2 });
    relay.resume();

    expect(await cardWhen(whileCut, () => true, 'a card')).toMatchObject({ ...missed, amount: 2, fee: createFee(2) });
    await cardWhen(before, (c) => c.legs_sold === 1, 'sold');
    await cardWhen(whileCut, (c) => c.legs_sold === 0.5, 'half sold');
    // The P&L the desk charts is the team's cash and positions at the mids: the create and the sell made while cut included.
    await charted(Date.now());
  });

  it("a gap in an account's changes (a notice lost, the connection kept) has the desk read the accounts again: the P&L it charts is the engine's", async () => {
    await startPricing();
    // A change the desk hears: it knows where the account's changes stand.
    await buy(f.nc, TEAM1, { 3: 1 });
    await charted(Date.now());
    const h = (await f.http.holdings(...team1)).body;
    const names = shardNames(0, 1);
    let dumped = false;
    const admin = f.nc.subscribe(names.admin, {
      callback: (_, m) => {
        dumped ||= decodeRecords<CommandBatch>(m.data).cmds.some((c) => c.cmd.op === 'dump');
      },
    });
    // The account's next change but one, as its engine publishes it, the one between never heard: positions that are not the account's.
    const change: HoldingsNotice = { client_id: TEAM1, seq: h.seq + 2, cause: 'fill', deltas: [3, 1], positions: [3, 999], cash: 0, ts: Date.now() };
    f.nc.publish(names.notices, encodeRecords({ v: 3, changes: [change], outcomes: [] }));
    try {
      await until(() => dumped, 'the desk reading the accounts again');
    } finally {
      admin.unsubscribe();
    }
    await charted(Date.now());
  });

  /** `npm run export-audit` against the system: its lines, parsed. */
  async function exportLines(): Promise<any[]> {
    const out = join(f.dir.path, `audit-${Date.now()}.ndjson`);
    const { stderr } = await run(process.execPath, [join(PROJECT_ROOT, 'dist/src/tools/export-audit.js'), '--out', out], {
      env: { ...process.env, CONFIG_FILE: writeConfigFile(testConfig(f.dir.path, overrides)), NATS_URL: f.nats.url, LOG_LEVEL: 'silent' },
      timeout: 30_000,
    });
    expect(stderr).toMatch(/exported \d+ audit entries/);
    return readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  }
});

describe('the desk with two engine shards, across a stop and a crash of the pricing service', () => {
  const { f, startPricing, kill, cardWhen, create, sell } = useDesk({ ...overrides, engine: { shards: 2 } });
  const TEAM2 = 2;
  const team2 = ['team2', 'team2pass'] as const;

  it("records each shard's conversions made while it was stopped as missed, and follows their legs on each shard's journal across a SIGKILL", async () => {
    await buy(f.nc, TEAM1, undyBasket(4));
    await buy(f.nc, TEAM2, undyBasket(4));
    let p = await startPricing();
    const scoredOne = await create(2);
    const scoredTwo = await create(2, team2);
    await cardWhen(scoredOne, (c) => c.edge !== null, 'scored');
    await cardWhen(scoredTwo, (c) => c.edge !== null, 'scored', TEAM2);

    await p.stop();
    // Client 1 is shard 1's, client 2 shard 0's (proto/shards.ts).
    const missedOne = await create(1);
    const missedTwo = await create(1, team2);
    await sell({ [UNDY]: 1 });
    await sell({ [UNDY]: 3 }, TEAM2);
    p = await startPricing();
    expect(await cardWhen(missedOne, () => true, 'a card')).toMatchObject({ unscored: 'missed', edge: null, fee: createFee(1), legs_sold: 0 });
    expect(await cardWhen(missedTwo, (c) => c.legs_sold === 1, 'sold', TEAM2)).toMatchObject({ unscored: 'missed', edge: null, fee: createFee(1) });
    await cardWhen(scoredOne, (c) => c.legs_sold === 0.5, 'half sold');
    await cardWhen(scoredTwo, (c) => c.legs_sold === 1, 'sold', TEAM2);

    await kill(p);
    await sell({ [UNDY]: 2 });
    p = await startPricing();
    await cardWhen(missedOne, (c) => c.legs_sold === 1, 'sold');
    expect(await cardWhen(scoredOne, (c) => c.legs_sold === 1, 'sold')).toMatchObject({ edge: 2 * 25 - createFee(2) });
  });
});

/**
 * A TCP relay to the nats-server for one client, which can be cut: its
 * connections dropped and new ones refused until it is resumed, as a network
 * partition does to that client alone (the server and every other client go
 * on).
 */
class Relay {
  private cutOff = false;
  private readonly sockets = new Set<Socket>();
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(target: number): Promise<Relay> {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const relay = new Relay(server, (server.address() as { port: number }).port);
    server.on('connection', (client) => {
      if (relay.cutOff) return void client.destroy();
      const upstream = tcpConnect(target, '127.0.0.1');
      for (const s of [client, upstream]) {
        relay.sockets.add(s);
        s.on('close', () => relay.sockets.delete(s));
        s.on('error', () => {});
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    return relay;
  }

  cut(): void {
    this.cutOff = true;
    for (const s of this.sockets) s.destroy();
  }

  resume(): void {
    this.cutOff = false;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((r) => this.server.close(() => r()));
  }
}
