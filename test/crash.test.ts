import { afterAll, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import type { NatsConnection } from '@nats-io/transport-node';
import type { DumpResult } from '../proto/engine.js';
import type { Delta, JournalBatch, JournalEvent } from '../proto/journal.js';
import { SESSION_SUBJECT, fillSessionOfMsgId } from '../proto/subjects.js';
import { shardNames, shardOfClient } from '../proto/shards.js';
import { fillDelta, type Fill } from '../proto/fill.js';
import { freePort, startNatsServer, type NatsServer } from '../src/launcher/nats-server.js';
import { EngineClient } from '../src/shared/engine-client.js';
import { consistencyCheck, rebuild } from '../src/engine/check.js';
import { replayJournal } from '../src/engine/journal.js';
import { loadBaskets } from '../src/config/baskets.js';
import { ensureFillStream } from '../src/shared/streams.js';
import { connectNats } from '../src/shared/nats.js';
import { multicastSender } from '../src/feed/multicast.js';
import { encodeMdDatagram } from '../proto/ndfex.js';
import { decode } from '../proto/codec.js';
import type { SessionMarker } from '../proto/fill.js';
import { api, expectedPositions, killProcess, quietLog, spawnEngine, spawnService, tempDir, testConfig, until, writeConfigFile } from './helpers/system.js';
import { feedAddrs, feedProcessEnv, fillMsg, fillStream, sendClearing } from './helpers/feed.js';

/**
 * Crash safety under load: creates, redeems and fills (sent as the exchange
 * sends them, through the feed bridge) stream in, and exchange sessions begin
 * anew (each zeroing every position at its place in the fill stream: the
 * operator's new session, and an exchange restart the bridge detects), while
 * the engine, the gateways, the feed bridge and nats-server are SIGKILLed at
 * random moments, each kind several times. Clients retry with the same
 * idempotency key until they get a definitive answer, as the README tells
 * teams to. Afterwards every acknowledged operation is in the journal once,
 * the holdings are exactly the fills after the last reset plus the
 * conversions decided after it, and the operator's check passes (it also
 * replays each conversion to the positions it answered).
 */
const TEAMS = 4;
const WORKERS = 8;
const dir = tempDir();
const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  dir.remove();
});

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const jitter = (lo: number, hi: number) => lo + Math.random() * (hi - lo);

/** A process restarted whenever it dies (the launcher's supervisor does this in production) until `stop`. */
function supervised(start: () => Promise<ChildProcess>) {
  let child: ChildProcess | undefined;
  let stopping = false;
  let up: Promise<void>;
  const launch = (): Promise<void> =>
    (up = (async () => {
      for (;;) {
        try {
          const c = await start();
          child = c;
          c.once('exit', () => {
            if (!stopping) void launch();
          });
          return;
        } catch {
          await pause(100); // nats-server may be restarting
        }
      }
    })());
  return {
    start: launch,
    up: () => up,
    kill: async (signal: NodeJS.Signals = 'SIGKILL') => {
      await up;
      if (child) await killProcess(child, signal);
    },
    stop: async (signal: NodeJS.Signals = 'SIGKILL') => {
      stopping = true;
      await up;
      if (child) await killProcess(child, signal);
    },
  };
}

/** Each event's fill-stream position as the journal recorded it (proto/journal.ts JournalBatch `fills`). */
function positions(batch: JournalBatch): (number | undefined)[] {
  const f = batch.fills ?? [];
  return batch.events.map((_, i) => {
    let at: number | undefined;
    for (let k = 0; k + 1 < f.length && f[k]! <= i; k += 2) at = f[k + 1];
    return at;
  });
}

it.each([
  { shards: 1, gateways: 1 },
  // The same load over two engine shards (each killed in turn) and two gateways taking turns.
  { shards: 2, gateways: 2 },
])(
  'loses no acknowledged operation and applies none twice across SIGKILLs of engine, gateway, feed bridge and nats-server, through exchange session resets ($shards shard(s), $gateways gateway(s))',
  async ({ shards, gateways: gatewayCount }) => {
    const port = await freePort();
    const home = `${dir.path}/${shards}x${gatewayCount}`;
    const storeDir = `${home}/nats`;
    let nats: NatsServer = await startNatsServer({ port, storeDir });
    cleanups.push(() => nats.stop('SIGKILL'));
    const roster = Array.from({ length: TEAMS }, (_, i) => `${i + 1} team${i + 1} team${i + 1}pass`).join('\n');
    const cfg = testConfig(home, { roster, requestTimeoutMs: 1000, ...(shards > 1 ? { engine: { shards } } : {}) });

    const engines = Array.from({ length: shards }, (_, shard) => supervised(() => spawnEngine(nats.url, shards === 1 ? cfg : { ...cfg, engine: { shards, shard } })));
    for (const e of engines) await e.start();
    cleanups.push(async () => {
      for (const e of engines) await e.stop();
    });

    // Gateways as processes on fixed ports, so a client finds one again after its restart.
    const gatewayPorts = await Promise.all(Array.from({ length: gatewayCount }, () => freePort()));
    const gateways = gatewayPorts.map((gp) => {
      const configFile = writeConfigFile({ ...cfg, http: { ...cfg.http, port: gp } });
      return supervised(async () => {
        const s = await spawnService('gateway', 'gateway/main.js', { NATS_URL: nats.url, CONFIG_FILE: configFile, LOG_LEVEL: 'info' }, 20_000);
        return s.child;
      });
    });
    for (const g of gateways) await g.start();
    cleanups.push(async () => {
      for (const g of gateways) await g.stop();
    });
    const http = api(gatewayPorts.map((gp) => `http://127.0.0.1:${gp}`));

    // The exchange: one fill per datagram on the clearing feed; a new exchange session starts its seq again at 1.
    const feeds = await feedAddrs();
    let session = 1;
    /** A feed process on this test's groups and server: the bridge, or its standby. */
    const spawnFeed = async (name: string, env: NodeJS.ProcessEnv) =>
      (
        await spawnService(
          name,
          'feed/main.js',
          { ...feedProcessEnv(nats.url, feeds), LOG_LEVEL: 'info', NDFEX_STATUS_INTERVAL_MS: '200', ...env },
          20_000,
        )
      ).child;
    // The operator's session name, read at each start: changing it begins a new exchange session (a reset marker in the fill stream).
    const bridge = supervised(() => spawnFeed('feed', { NDFEX_SESSION: `crash-${session}`, NDFEX_VERDICT_WINDOW_MS: '2000' }));
    await bridge.start();
    cleanups.push(() => bridge.stop());
    // The standby, as npm start runs it beside the bridge: it must never publish what the bridge would not (a new session's fill before its reset).
    const standby = supervised(() => spawnFeed('feed-standby', { NDFEX_FEED_ROLE: 'standby' }));
    await standby.start();
    cleanups.push(() => standby.stop());

    const nc: NatsConnection = await connectNats(nats.url, 'crash-test');
    cleanups.push(() => nc.close());
    await ensureFillStream(nc);
    // The exchange sends a session from one socket: fills on the clearing feed, a heartbeat on market data every 50 ms.
    let sender = await multicastSender('127.0.0.1');
    cleanups.push(() => sender.close());
    /** A restarted exchange: a new socket, both feeds' seqs from the start (the old socket says nothing more). */
    const restartExchange = async () => {
      const old = sender;
      sender = await multicastSender('127.0.0.1');
      exchangeSeq = 0;
      mdSeq = 0;
      sent.push(new Map());
      await old.close().catch(() => {});
    };

    let loadRunning = true;
    let exchangeSeq = 0;
    /** What each exchange process sent (a restart is a new one), by seq: `client_id/symbol`. */
    const sent: Map<number, string>[] = [new Map()];
    let mdSeq = 100;
    const mdLoop = (async () => {
      while (loadRunning) {
        await sender.send(feeds.marketData, encodeMdDatagram([{ type: 'heartbeat', seq: mdSeq++, timestamp: process.hrtime.bigint() }])).catch(() => {});
        await pause(50);
      }
    })();
    // Markers the bridge publishes for an exchange restart it detected (the operator's say "operator session changed").
    let detected = 0;
    nc.subscribe(SESSION_SUBJECT, { callback: (_e, m) => void (decode<SessionMarker>(m.data).detail.startsWith('exchange restart') && detected++) });
    const fillLoop = (async () => {
      for (let k = 1; loadRunning; k++) {
        const client = 1 + (k % TEAMS);
        const symbol = 3 + (Math.floor(k / TEAMS) % 10);
        // Datagrams sent while no bridge listens are lost, as on the real feed: the fill stream says what counted.
        sent[sent.length - 1]!.set(++exchangeSeq, `${client}/${symbol}`);
        await sendClearing(sender, feeds.clearing, [[fillMsg(exchangeSeq, client, symbol, 20)]]).catch(() => {});
        await pause(3);
      }
    })();

    const outcomes = new Map<string, number>(); // idempotency key → final HTTP status
    const workers = Array.from({ length: WORKERS }, async (_, w) => {
      const team = (w % TEAMS) + 1;
      for (let i = 0; loadRunning; i++) {
        const key = `w${w}-${i}`;
        const op = i % 3 === 2 ? '/redeem' : '/create';
        for (let attempt = 0; ; attempt++) {
          const status = await http.convertOnce(op, `team${team}`, `team${team}pass`, key);
          if (status === 200 || status === 400 || status === 409) {
            outcomes.set(key, status);
            break;
          }
          if (!loadRunning && attempt > 200) break;
          await pause(30);
        }
      }
    });

    // The crashes: every kind, several times, in an order that mixes them. 'session': the bridge dies, the exchange
    // restarts (seq from 1), and the bridge comes back under the operator's new session name. 'restart': the exchange
    // restarts while the bridge listens; the bridge holds the new session's fills until its verdict, then resets.
    const schedule = ['engine', 'session', 'gateway', 'restart', 'nats', 'bridge', 'engine', 'session'] as const;
    const killed = new Map<string, number>();
    for (const [i, victim] of schedule.entries()) {
      await pause(jitter(300, 800));
      killed.set(victim, (killed.get(victim) ?? 0) + 1);
      if (victim === 'engine') await engines[i % shards]!.kill();
      if (victim === 'gateway') await gateways[i % gatewayCount]!.kill();
      if (victim === 'bridge') await bridge.kill();
      if (victim === 'session') {
        session++;
        await bridge.kill();
        // Nothing listens now: the exchange's new session starts at seq 1 before a bridge hears it.
        await restartExchange();
      }
      if (victim === 'restart') {
        const before = detected;
        await restartExchange();
        await until(() => detected > before, 'the bridge to detect the exchange restart (its verdict window is 2 s)', 30_000);
      }
      if (victim === 'nats') {
        await nats.stop('SIGKILL');
        await pause(300);
        nats = await startNatsServer({ port, storeDir });
      }
      await Promise.all([...engines, ...gateways, bridge].map((p) => p.up()));
    }
    // Steady load after the last crash, so the run ends with the system serving.
    await pause(1500);

    loadRunning = false;
    await Promise.all([fillLoop, mdLoop, ...workers]);
    // A clean stop publishes every fill the bridges took in: the fill stream is final.
    await bridge.stop('SIGTERM');
    await standby.stop('SIGTERM');
    const stream = await fillStream(nc);
    const lastSeq = stream.length > 0 ? stream[stream.length - 1]!.seq : 0;

    // The engine has applied every fill once it reports a fill position at the stream's end.
    const client = new EngineClient(nc, 10_000, { shards });
    cleanups.push(() => client.close());
    let dump: DumpResult;
    for (;;) {
      const r = await client.call({ op: 'dump' });
      if (r.ok && (r.result as DumpResult).fill_seq >= lastSeq) {
        dump = r.result as DumpResult;
        break;
      }
      await pause(50);
    }

    // 1. Every acknowledged operation is in the journal exactly once, and nothing appears twice.
    const events: JournalEvent[] = [];
    /** Each conversion's deltas, by the basket version its own shard journaled, and the fill position it was decided at. */
    const conversionDeltas = new Map<JournalEvent, Delta[]>();
    const decidedAt = new Map<JournalEvent, number | undefined>();
    for (const s of dump.shards ?? [{ shard: 0, journal_seq: dump.journal_seq }]) {
      const shard = shards === 1 ? undefined : { names: shardNames(s.shard, shards), owns: (id: number) => shardOfClient(id, shards) === s.shard };
      const part = await rebuild(nc, s.journal_seq, 0, quietLog, loadBaskets(undefined), shard);
      for (const ev of part.events) if (ev.t === 'conversion') conversionDeltas.set(ev, part.state.catalog.deltas(ev));
      events.push(...part.events);
      const at: (number | undefined)[] = [];
      await replayJournal(nc, 1, (_, __, batch) => at.push(...positions(batch)), s.journal_seq, shardNames(s.shard, shards).journalStream);
      part.events.forEach((ev, i) => decidedAt.set(ev, at[i]));
    }
    const byKey = new Map<string, JournalEvent[]>();
    for (const ev of events) {
      if (ev.t === 'conversion' || ev.t === 'rejected') {
        if ('key' in ev && ev.key) byKey.set(ev.key, [...(byKey.get(ev.key) ?? []), ev]);
      }
    }
    for (const [key, evs] of byKey) expect(evs, key).toHaveLength(1);
    let accepted = 0;
    for (const [key, status] of outcomes) {
      const ev = byKey.get(key)?.[0];
      if (status === 200) {
        expect(ev?.t, key).toBe('conversion');
        accepted++;
      }
      if (status === 400) expect(ev?.t, key).toBe('rejected');
    }
    const resets = stream.filter((m) => m.subject === SESSION_SUBJECT && m.data.reset === true);
    const statuses = [...outcomes.values()];
    const summary = `outcomes: ${statuses.filter((s) => s === 200).length} ok, ${statuses.filter((s) => s === 400).length} refused; ${stream.length} fill-stream messages, ${resets.length} resets; kills ${JSON.stringify(Object.fromEntries(killed))}`;
    expect(accepted, summary).toBeGreaterThan(20);
    // Every kind of kill happened, and the exchange sessions began anew in the fill stream.
    expect([...killed.keys()].sort(), summary).toEqual(['bridge', 'engine', 'gateway', 'nats', 'restart', 'session']);
    expect(resets.length, summary).toBeGreaterThanOrEqual(3);
    expect(resets.filter((m) => (m.data as SessionMarker).detail.startsWith('exchange restart')).length, summary).toBeGreaterThanOrEqual(1);

    // No fill of an exchange session is stored before that session's reset, whichever bridge published it.
    const markerAt = new Map<number, number>();
    for (const m of stream) if (m.subject === SESSION_SUBJECT && !markerAt.has((m.data as SessionMarker).session)) markerAt.set((m.data as SessionMarker).session, m.seq);
    for (const m of stream) {
      const of = /^fill-(\d+)-/.exec(m.msgId ?? '');
      const s = of ? Number(of[1]) : 1;
      if (m.subject !== SESSION_SUBJECT && s > 1) expect(m.seq, `${m.msgId} at stream seq ${m.seq}; ${summary}`).toBeGreaterThan(markerAt.get(s) ?? Infinity);
    }
    // And every fill stored under one session came from one exchange process: none of a restarted exchange under the session before.
    const bySession = new Map<string, { seq: number; what: string }[]>();
    for (const m of stream) {
      const of = /^fill-(\d+)-(\d+)$/.exec(m.msgId ?? '');
      if (!of) continue;
      const f = m.data as Fill;
      bySession.set(of[1]!, [...(bySession.get(of[1]!) ?? []), { seq: Number(of[2]), what: `${f.client_id}/${f.symbol}` }]);
    }
    for (const [s, list] of bySession) {
      expect(sent.some((e) => list.every((x) => e.get(x.seq) === x.what)), `session ${s}'s fills are one exchange process's; ${summary}`).toBe(true);
    }

    // 2. Final positions are exactly the fills after the last reset plus the conversions decided after it (so nothing half-applied, nothing lost to a replay).
    const lastReset = resets.length > 0 ? resets[resets.length - 1]!.seq : 0;
    // Not a fill stored under an earlier session's msg id after the reset (stale: the engine skips it).
    const lastSession = resets.length > 0 ? (resets[resets.length - 1]!.data as SessionMarker).session : 1;
    const fillsAfter = stream
      .filter((m) => m.seq > lastReset && m.subject !== SESSION_SUBJECT && (fillSessionOfMsgId(m.msgId ?? '') ?? lastSession) >= lastSession)
      .map((m) => ({ client_id: (m.data as Fill).client_id, symbol: (m.data as Fill).symbol, quantity: fillDelta(m.data as Fill) }));
    const conversionsAfter = events.flatMap((ev): [number, Delta[]][] => {
      if (ev.t !== 'conversion') return [];
      const at = decidedAt.get(ev);
      expect(at, 'a conversion without its fill position').toBeDefined();
      return at! >= lastReset ? [[ev.clientId, conversionDeltas.get(ev)!]] : [];
    });
    const expected = expectedPositions(fillsAfter, conversionsAfter);
    for (let id = 1; id <= TEAMS; id++) {
      const h = await http.holdings(`team${id}`, `team${id}pass`);
      expect(h.status).toBe(200);
      const got = Object.fromEntries((h.body.positions as { symbol: number; quantity: number }[]).map((p) => [p.symbol, p.quantity]));
      expect(got, `team${id}; ${summary}`).toEqual(Object.fromEntries(expected.get(id) ?? []));
      for (const q of Object.values(got)) expect(q).toBeGreaterThanOrEqual(0);
    }

    // 3. The operator consistency check agrees, and each conversion replays to the positions it answered.
    const report = await consistencyCheck(nc, dump, loadBaskets(undefined), quietLog);
    expect(report.mismatches).toEqual([]);
    expect(report.acknowledged).toEqual([]);
    expect(report.conservation).toEqual([]);
    expect(report.ok).toBe(true);
  },
  150_000,
);
