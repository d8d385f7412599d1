import { describe, expect, it } from 'vitest';
import type { ClearingMessage, MdMessage } from '../proto/ndfex.js';
import type { FeedAlert } from '../proto/marketdata.js';
import type { Fill } from '../proto/fill.js';
import { SessionJudge, fingerprint, type Decision, type Run, type Verdict } from '../src/feed/verdict.js';
import type { HeldKeeper } from '../src/feed/held-store.js';
import { SessionVerdict } from '../src/feed/session-verdict.js';
import { ClearingFeed } from '../src/feed/clearing.js';
import { MarketDataIntake } from '../src/feed/md-intake.js';
import { ProblemBook } from '../src/feed/problems.js';
import { quietLog } from './helpers/system.js';

/**
 * The exchange-session verdict without sockets or NATS: decoded messages with
 * their sender and the time go in, decisions (and, through SessionVerdict,
 * what the bridge does with them) come out. The same attacks over real
 * multicast are in feed-forgery.test.ts.
 */
const SETTINGS = { windowMs: 5000, minMessages: 8 };
const EXCHANGE = '10.0.0.1:5000';
const EXCHANGE_CLEARING = '10.0.0.1:5001';
/** A restarted exchange opens new sockets on the same host. */
const RESTARTED = '10.0.0.1:6000';
const RESTARTED_CLEARING = '10.0.0.1:6001';
const FORGER = '10.0.0.9:7000';

const S = 1_000_000_000n;
const hb = (seq: number, tsSeconds: number): MdMessage => ({ type: 'heartbeat', seq, timestamp: BigInt(tsSeconds * 2) * (S / 2n) });
const fill = (seq: number, client_id = 1, quantity = 5): ClearingMessage => ({ type: 'fill', seq, client_id, symbol: 4, quantity, price: 100, side: 1 });
const kinds = (ds: Decision[]) => ds.map((d) => d.kind);

/** A judge that follows a running session: market data seq 100..104 (heartbeats every 500 ms), clearing seq 50..51. */
function running() {
  const judge = new SessionJudge(SETTINGS);
  let now = 1_000_000;
  for (let i = 0; i < 5; i++) expect(kinds(judge.observe('market_data', hb(100 + i, 1000 + i / 2), EXCHANGE, (now += 500)))).toEqual(['pass']);
  for (const seq of [50, 51]) expect(kinds(judge.observe('clearing', fill(seq), EXCHANGE_CLEARING, now))).toEqual(['pass']);
  return { judge, now };
}

describe('SessionJudge (pure)', () => {
  it('believes a restart once the new market-data run has lasted the window with the old session silent, and hands back what it held', () => {
    const { judge, now: t0 } = running();
    const opened = judge.observe('market_data', hb(0, 1003), RESTARTED, t0 + 500);
    expect(kinds(opened)).toEqual(['opened']);
    expect(judge.observe('clearing', fill(1), RESTARTED_CLEARING, t0 + 500)).toEqual([]);
    expect(judge.held('clearing')).toBe(1);
    let last: Decision[] = [];
    let seq = 1;
    for (; last.length === 0 && seq < 40; seq++) last = judge.observe('market_data', hb(seq, 1003 + seq / 2), RESTARTED, t0 + 500 + seq * 500);
    expect(kinds(last)).toEqual(['accepted']);
    const accepted = last[0] as Extract<Decision, { kind: 'accepted' }>;
    expect(accepted.by).toBe('evidence');
    expect(accepted.clearing.map((m) => m.seq)).toEqual([1]);
    expect(accepted.md.map((m) => m.seq)).toEqual(Array.from({ length: seq }, (_, i) => i));
    expect(accepted.md.length).toBeGreaterThanOrEqual(SETTINGS.minMessages);
    expect(judge.verdicts()).toEqual([]);
    // The new session is the followed one now.
    expect(judge.lastSeq('clearing')).toBe(1);
    expect(kinds(judge.observe('clearing', fill(2), RESTARTED_CLEARING, t0 + 500 + seq * 500))).toEqual(['pass']);
  });

  it('rejects a claimed restart the moment the old session says one more word: nothing reset, its messages still held', () => {
    const { judge, now } = running();
    expect(kinds(judge.observe('market_data', hb(0, 1003), FORGER, now + 10))).toEqual(['opened']);
    expect(judge.observe('clearing', fill(1, 2, 999), FORGER, now + 20)).toEqual([]);
    const ds = judge.observe('market_data', hb(105, 1003), EXCHANGE, now + 500);
    expect(kinds(ds)).toEqual(['rejected', 'pass']);
    expect(judge.verdicts().map((v) => v.status)).toEqual(['rejected']);
    expect(judge.held('clearing')).toBe(1);
    expect(judge.lastSeq('clearing')).toBe(51);
    // However long the forged run goes on, it is never accepted on evidence.
    for (let i = 1; i < 30; i++) expect(kinds(judge.observe('market_data', hb(i, 1003 + i / 2), FORGER, now + 500 + i * 500)).filter((k) => k === 'accepted')).toEqual([]);
  });

  it('holds a far seq jump, and drops it as strays when the followed run goes on', () => {
    const { judge, now } = running();
    const ds = judge.observe('clearing', fill(5_000_051), FORGER, now + 10);
    expect(kinds(ds)).toEqual(['opened']);
    expect((ds[0] as Extract<Decision, { kind: 'opened' }>).verdict.kind).toBe('jump');
    const next = judge.observe('clearing', fill(52), EXCHANGE_CLEARING, now + 20);
    expect(kinds(next)).toEqual(['dropped', 'pass']);
    expect((next[0] as Extract<Decision, { kind: 'dropped' }>).strays).toBe(1);
    expect(judge.lastSeq('clearing')).toBe(52);
  });

  describe('after a start, with the progress the last bridge saved (clearing seq 51, market data seq 104 from EXCHANGE)', () => {
    const resumed = () => new SessionJudge(SETTINGS, { clearing: { seq: 51 }, market_data: { seq: 104, ts: 1002n * S, sender: EXCHANGE }, at: 1_000_000 });

    it('market data from the same exchange socket, then fills past a gap: a gap in the old session (passed)', () => {
      const judge = resumed();
      expect(kinds(judge.observe('market_data', hb(900, 1400), EXCHANGE, 1_400_000))).toEqual(['pass']);
      expect(kinds(judge.observe('clearing', fill(80), EXCHANGE_CLEARING, 1_400_000))).toEqual(['pass']);
      expect(judge.verdicts()).toEqual([]);
    });

    it('market data from another socket (the exchange restarted and is past the old seqs): fills past a gap are held for the operator, and market data going on does not reject it', () => {
      const judge = resumed();
      expect(kinds(judge.observe('market_data', hb(900, 1400), RESTARTED, 1_400_000))).toEqual(['pass']);
      const opened = judge.observe('clearing', fill(80), RESTARTED_CLEARING, 1_400_000);
      expect(kinds(opened)).toEqual(['opened']);
      const v = (opened[0] as Extract<Decision, { kind: 'opened' }>).verdict;
      expect(v).toMatchObject({ kind: 'restart', downtime: true, status: 'pending' });
      expect(v.operatorOnly).toMatch(`market data now comes from ${RESTARTED}, the last bridge heard it from ${EXCHANGE}`);
      for (let i = 1; i <= 20; i++) expect(kinds(judge.observe('market_data', hb(900 + i, 1400 + i / 2), RESTARTED, 1_400_000 + i * 500))).toEqual(['pass']);
      expect(judge.observe('clearing', fill(81), RESTARTED_CLEARING, 1_410_000)).toEqual([]);
      expect(kinds(judge.tick(1_420_000))).toEqual([]);
      expect(judge.held('clearing')).toBe(2);
      expect(judge.verdicts().map((x) => x.status)).toEqual(['pending']);
    });
  });

  it('flags a heard seq sent again with other content, keeping what was applied', () => {
    const { judge, now } = running();
    const ds = judge.observe('clearing', fill(51, 2, 999), FORGER, now + 10);
    expect(kinds(ds)).toEqual(['conflict']);
    const c = ds[0] as Extract<Decision, { kind: 'conflict' }>;
    expect(c.applied.sender).toBe(EXCHANGE_CLEARING);
    expect(c.other.sender).toBe(FORGER);
    expect(c.applied.fingerprint).not.toBe(c.other.fingerprint);
    // The same content again is a duplicate: dropped, never passed twice (JetStream's dedup lasts only an hour).
    expect(judge.observe('clearing', fill(51), EXCHANGE_CLEARING, now + 20)).toEqual([{ kind: 'duplicate', feed: 'clearing', seq: 51, sender: EXCHANGE_CLEARING, first: EXCHANGE_CLEARING }]);
  });

  it('a copy of a passed message is dropped whoever sends it; a late seq never passed (a gap filled) passes once', () => {
    const { judge, now } = running();
    expect(judge.observe('clearing', fill(50), FORGER, now + 1)).toEqual([{ kind: 'duplicate', feed: 'clearing', seq: 50, sender: FORGER, first: EXCHANGE_CLEARING }]);
    expect(kinds(judge.observe('clearing', fill(50), EXCHANGE_CLEARING, now + 2))).toEqual(['duplicate']);
    expect(kinds(judge.observe('market_data', hb(103, 1001.5), EXCHANGE, now + 3))).toEqual(['duplicate']);
    // Seq 52 lost on the way, 53 heard: 52 arriving late from the run's own socket fills the gap, once.
    expect(kinds(judge.observe('clearing', fill(53), EXCHANGE_CLEARING, now + 4))).toEqual(['pass']);
    expect(kinds(judge.observe('clearing', fill(52), EXCHANGE_CLEARING, now + 5))).toEqual(['pass']);
    expect(kinds(judge.observe('clearing', fill(52), EXCHANGE_CLEARING, now + 6))).toEqual(['duplicate']);
  });
});

describe('SessionVerdict: the bridge acting on the verdict, without sockets', () => {
  function bridgeCore(withKeeper = false, savedSeq = 0) {
    const published: Array<{ fill: Fill } | { barrier: string }> = [];
    /** What the held store (src/feed/held-store.ts) is asked to do, in order; its steps between fills are barriers here too. */
    const kept: string[] = [];
    const keeper: HeldKeeper = {
      held: (v, run, m) => void kept.push(`held ${v.id} ${run.from} ${m.seq}`),
      rejected: (v) => void kept.push(`rejected ${v.id}`),
      applying: (v, run, restart) => {
        published.push({ barrier: `applying ${run.from}${restart ? ' restart' : ''}` });
        return Promise.resolve();
      },
      release: (_v: Verdict, run: Run) => void published.push({ barrier: `release ${run.from}` }),
      releaseStored: (subject) => void published.push({ barrier: `release ${subject}` }),
    };
    const barriers: Array<() => Promise<void>> = [];
    const alerts: FeedAlert[] = [];
    const sessions: Array<{ detail: string; seq: number }> = [];
    const alert = (feed: FeedAlert['feed'], a: Omit<FeedAlert, 'ts' | 'feed'>) => void alerts.push({ ...a, feed, ts: 0 });
    const problems = new ProblemBook();
    const md = new MarketDataIntake({ alert, bbos: () => {}, log: quietLog });
    const clearing: ClearingFeed = new ClearingFeed(
      {
        publisher: {
          enqueueFill: (f) => void published.push({ fill: f }),
          enqueueBarrier: (what, run) => {
            published.push({ barrier: what });
            barriers.push(run);
          },
        },
        log: quietLog,
        alert: (a) => alert('clearing', a),
        beginSession: async (detail, seq) => void sessions.push({ detail, seq }),
        route: (m, sender) => verdict.observeClearing(m, sender),
      },
      savedSeq,
    );
    const verdict = new SessionVerdict(new SessionJudge(SETTINGS, savedSeq ? { clearing: { seq: savedSeq } } : {}), { clearing, md, problems, alert, log: quietLog, ...(withKeeper ? { held: keeper } : {}) });
    return { published, barriers, alerts, sessions, problems, clearing, md, verdict, kept };
  }

  it('held clearing messages are kept as they are held; an accepted restart is marked as applying before its marker and fills, released behind them', () => {
    const b = bridgeCore(true);
    let t = 1_000_000;
    for (let i = 0; i < 5; i++) b.verdict.observeMarketData([hb(100 + i, 1000 + i / 2)], EXCHANGE, (t += 500));
    b.verdict.observeClearing(fill(50), EXCHANGE_CLEARING, t);
    b.verdict.observeMarketData([hb(0, 1003)], RESTARTED, (t += 500));
    b.verdict.observeClearing(fill(1, 2, 7), RESTARTED_CLEARING, t);
    b.verdict.observeClearing(fill(2, 3, 1), RESTARTED_CLEARING, t);
    const id = b.problems.list()[0]!.id;
    expect(b.kept).toEqual([`held ${id} 1 1`, `held ${id} 1 2`]);
    expect(b.verdict.decide(id, 'confirm', 'op', t)).toBe(true);
    expect(b.published.slice(1).map((x) => ('barrier' in x ? x.barrier : x.fill.seq))).toEqual(['applying 1 restart', 'exchange restart', 1, 2, 'release 1']);
  });

  it('a copy with other content of a held fill, from the run\'s own socket: a conflict (counted, alerted naming the verdict, a standing problem); the held fill kept, not kept again, and applied once confirmed', () => {
    const b = bridgeCore(true, 11);
    let t = 1_000_000;
    // Past the saved seq with nothing heard since the start: held as a possible restart while no bridge listened.
    b.verdict.observeClearing(fill(20, 1, 1), EXCHANGE_CLEARING, t);
    b.verdict.observeClearing(fill(21, 2, 2), EXCHANGE_CLEARING, t);
    const id = b.problems.list()[0]!.id;
    b.verdict.observeClearing(fill(20, 3, 999), EXCHANGE_CLEARING, (t += 10));
    expect(b.clearing.counters.conflicts).toBe(1);
    const conflicts = b.alerts.filter((a) => a.kind === 'conflict');
    expect(conflicts).toEqual([expect.objectContaining({ feed: 'clearing', received: 20, verdict: id, fingerprints: [fingerprint(fill(20, 1, 1)), fingerprint(fill(20, 3, 999))] })]);
    expect(conflicts[0]!.detail).toContain(`held ${fingerprint(fill(20, 1, 1))} from ${EXCHANGE_CLEARING}`);
    expect(conflicts[0]!.detail).toContain(`in the run of verdict ${id}, kept (applied only if the verdict is accepted), not ${fingerprint(fill(20, 3, 999))}`);
    expect(b.problems.list().map((p) => [p.id, p.kind])).toEqual([[id, 'verdict_pending'], ['conflict-clearing', 'conflict']]);
    expect(b.kept).toEqual([`held ${id} 20 20`, `held ${id} 20 21`]);
    expect(b.verdict.decide(id, 'confirm', 'op', t)).toBe(true);
    const fills = b.published.flatMap((x) => ('fill' in x ? [[x.fill.seq, x.fill.client_id, x.fill.quantity]] : []));
    expect(fills).toEqual([[20, 1, 1], [21, 2, 2]]);
  });

  it('a rejected restart while no bridge listened: its held run is marked as applied to the old session before its fills pass, released behind them', () => {
    const b = bridgeCore(true, 11);
    let t = 1_000_000;
    // Nothing heard since the start: fills past the saved seq wait as a possible restart while no bridge listened.
    b.verdict.observeClearing(fill(20), EXCHANGE_CLEARING, t);
    const id = b.problems.list()[0]!.id;
    expect(b.kept).toEqual([`held ${id} 20 20`]);
    expect(b.verdict.decide(id, 'reject', 'op', (t += 10))).toBe(true);
    expect(b.published.map((x) => ('barrier' in x ? x.barrier : x.fill.seq))).toEqual(['applying 20', 20, 'release 20']);
  });

  it('a far jump dropped as strays is released, never applied; a run replaced by another is released before the new one is kept', () => {
    const b = bridgeCore(true);
    let t = 1_000_000;
    for (let i = 0; i < 5; i++) b.verdict.observeMarketData([hb(100 + i, 1000 + i / 2)], EXCHANGE, (t += 500));
    b.verdict.observeClearing(fill(50), EXCHANGE_CLEARING, t);
    b.verdict.observeClearing(fill(9_000), FORGER, (t += 1));
    const first = b.problems.list()[0]!.id;
    b.verdict.observeClearing(fill(20_000), FORGER, (t += 1));
    b.verdict.observeClearing(fill(51), EXCHANGE_CLEARING, (t += 1));
    expect(b.kept.filter((k) => k.startsWith('held'))).toEqual([`held ${first} 9000 9000`, expect.stringMatching(/ 20000 20000$/)]);
    expect(b.published.map((x) => ('barrier' in x ? x.barrier : x.fill.seq))).toEqual([50, 'release 9000', 51, 'release 20000']);
  });

  it('an exchange restart: a pending problem while held, then the new session begins (a publisher barrier) before its first fill', async () => {
    const b = bridgeCore();
    let t = 1_000_000;
    for (let i = 0; i < 5; i++) b.verdict.observeMarketData([hb(100 + i, 1000 + i / 2)], EXCHANGE, (t += 500));
    for (const seq of [50, 51]) b.verdict.observeClearing(fill(seq), EXCHANGE_CLEARING, t);
    expect(b.published).toEqual([{ fill: expect.objectContaining({ seq: 50 }) }, { fill: expect.objectContaining({ seq: 51 }) }]);

    b.verdict.observeMarketData([hb(0, 1003)], RESTARTED, (t += 500));
    b.verdict.observeClearing(fill(1, 2, 7), RESTARTED_CLEARING, t);
    expect(b.problems.list().map((p) => p.kind)).toEqual(['verdict_pending']);
    expect(b.alerts.map((a) => a.kind)).toContain('verdict_pending');
    expect(b.published).toHaveLength(2);

    for (let seq = 1; b.problems.list().length > 0 && seq < 40; seq++) b.verdict.observeMarketData([hb(seq, 1003 + seq / 2)], RESTARTED, (t += 500));
    expect(b.problems.list()).toEqual([]);
    expect(b.alerts.map((a) => a.kind)).toContain('exchange_restart');
    expect(b.published.slice(2)).toEqual([{ barrier: 'exchange restart' }, { fill: expect.objectContaining({ seq: 1, client_id: 2, quantity: 7 }) }]);
    expect(b.clearing.restartsPending).toBe(1);
    await b.barriers[0]!();
    expect(b.sessions).toEqual([{ detail: expect.stringContaining('exchange restart'), seq: 1 }]);
    expect(b.clearing.restartsPending).toBe(0);
  });

  it('a fill replayed byte for byte, from another socket or the exchange\'s own, is not published again: counted, alerted when another sender\'s', () => {
    const b = bridgeCore();
    const t = 1_000_000;
    for (let i = 0; i < 5; i++) b.verdict.observeMarketData([hb(100 + i, 1000 + i / 2)], EXCHANGE, t + i * 500);
    for (const seq of [50, 51]) b.verdict.observeClearing(fill(seq), EXCHANGE_CLEARING, t + 3000);
    // Later (past JetStream's duplicate window, had the exchange sent few fills meanwhile), the recorded datagrams again.
    b.verdict.observeClearing(fill(51), FORGER, t + 3001);
    b.verdict.observeClearing(fill(50), EXCHANGE_CLEARING, t + 3002);
    expect(b.published.map((x) => ('fill' in x ? x.fill.seq : x.barrier))).toEqual([50, 51]);
    expect(b.clearing.counters.duplicates).toBe(2);
    expect(b.alerts.filter((a) => a.kind === 'replay').map((a) => a.detail)).toEqual([expect.stringContaining(`clearing seq 51 sent again by ${FORGER}, a copy of the message passed from ${EXCHANGE_CLEARING}`)]);
    expect(b.problems.list()).toEqual([]);
  });

  it('an exchange restart whose held fill 7 of 1..20 was lost on the way: the 19 held fills are kept and applied after the marker, and the lost one reported as a gap', () => {
    const b = bridgeCore(true);
    let t = 1_000_000;
    for (let i = 0; i < 5; i++) b.verdict.observeMarketData([hb(100 + i, 1000 + i / 2)], EXCHANGE, (t += 500));
    b.verdict.observeClearing(fill(50), EXCHANGE_CLEARING, t);
    b.verdict.observeMarketData([hb(0, 1003)], RESTARTED, (t += 500));
    const started = t;
    for (let seq = 1; seq <= 20; seq++) if (seq !== 7) b.verdict.observeClearing(fill(seq, 2, 1), RESTARTED_CLEARING, started + seq);
    const id = b.problems.list()[0]!.id;
    expect(b.problems.list().map((p) => p.id)).toEqual([id]);
    b.verdict.tick(started + 21);
    expect(b.problems.list()[0]!.detail).toContain('19 message(s) from 10.0.0.1:6001, 1 seq(s) between them never heard');
    expect(b.kept).toHaveLength(19);
    expect(b.alerts.map((a) => a.kind)).toEqual(['late_join', 'verdict_pending']);
    for (let seq = 1; b.problems.list().length > 0 && seq < 40; seq++) b.verdict.observeMarketData([hb(seq, 1003 + seq / 2)], RESTARTED, started + seq * 500);
    expect(b.problems.list()).toEqual([]);
    expect(b.published.slice(1).map((x) => ('barrier' in x ? x.barrier : x.fill.seq))).toEqual(['applying 1 restart', 'exchange restart', ...[1, 2, 3, 4, 5, 6], ...Array.from({ length: 13 }, (_, i) => i + 8), 'release 1']);
    expect(b.alerts.filter((a) => a.kind === 'gap')).toEqual([expect.objectContaining({ feed: 'clearing', expected: 7, received: 8, detail: expect.stringContaining('fills lost for good') })]);
    expect(b.clearing.counters).toMatchObject({ gaps: 1, missed_messages: 1 });
    expect(b.alerts.map((a) => a.kind)).not.toContain('stray');
  });

  it('a forged restart: rejected on the old session\'s next word, a standing problem, nothing reset or published', () => {
    const b = bridgeCore();
    let t = 1_000_000;
    for (let i = 0; i < 5; i++) b.verdict.observeMarketData([hb(100 + i, 1000 + i / 2)], EXCHANGE, (t += 500));
    b.verdict.observeClearing(fill(50), EXCHANGE_CLEARING, t);
    b.verdict.observeMarketData([hb(0, 1003)], FORGER, (t += 10));
    b.verdict.observeClearing(fill(1, 2, 999), FORGER, t);
    b.verdict.observeMarketData([hb(105, 1003)], EXCHANGE, (t += 500));

    expect(b.problems.list().map((p) => [p.kind, p.actions])).toEqual([['restart_rejected', ['confirm', 'ack']]]);
    expect(b.clearing.counters.rejected_restarts).toBe(1);
    expect(b.published).toEqual([{ fill: expect.objectContaining({ seq: 50 }) }]);
    expect(b.clearing.restartsPending).toBe(0);
    expect(b.md.counters.last_seq).toBe(105);

    // The operator acknowledges instead of confirming: what it held is dropped as strays, never applied.
    expect(b.verdict.dropRejected(b.problems.list()[0]!.id, 'op', t)).toBe(true);
    expect(b.verdict.held('clearing')).toBe(0);
    expect(b.published).toHaveLength(1);
  });
});

describe('forged variants (pure): every one held or flagged, never applied', () => {
  it('a fill from another sender at a seq the session skipped (a gap, below the last heard) is held, not applied; the session going on makes it a stray', () => {
    const { judge, now } = running();
    // The exchange's seq 52 is lost; 53 arrives: 52 is a gap below the run's last.
    expect(kinds(judge.observe('clearing', fill(53), EXCHANGE_CLEARING, now))).toEqual(['pass']);
    const ds = judge.observe('clearing', fill(52, 2, 999), FORGER, now + 10);
    expect(kinds(ds)).toEqual(['opened']);
    expect(judge.held('clearing')).toBe(1);
    const next = judge.observe('clearing', fill(54), EXCHANGE_CLEARING, now + 20);
    expect(kinds(next)).toEqual(['dropped', 'pass']);
    // The exchange's own late datagram (its socket) is still taken.
    expect(kinds(judge.observe('market_data', hb(105, 1003), EXCHANGE, now + 500))).toEqual(['pass']);
    expect(kinds(judge.observe('market_data', hb(107, 1004), EXCHANGE, now + 1000))).toEqual(['pass']);
    expect(kinds(judge.observe('market_data', hb(106, 1003.5), EXCHANGE, now + 1001))).toEqual(['pass']);
  });

  it('a market-data message from another sender in a gap below the last heard is held, not applied', () => {
    const { judge, now } = running();
    expect(kinds(judge.observe('market_data', hb(106, 1003), EXCHANGE, now + 500))).toEqual(['pass']);
    expect(kinds(judge.observe('market_data', hb(105, 1002.5), FORGER, now + 510))).toEqual(['opened']);
  });

  it('after a bridge start (saved progress, nothing heard yet), a fill at or below the saved seq is held, not applied as a late one', () => {
    const judge = new SessionJudge(SETTINGS, { clearing: { seq: 50 }, market_data: { seq: 104, ts: 1002n * S }, at: 1_000_000 });
    let now = 1_000_500;
    expect(kinds(judge.observe('market_data', hb(105, 1003), EXCHANGE, now))).toEqual(['pass']);
    expect(kinds(judge.observe('clearing', fill(45, 2, 999), FORGER, (now += 10)))).toEqual(['opened']);
    expect(kinds(judge.observe('clearing', fill(51), EXCHANGE_CLEARING, (now += 10)))).toEqual(['dropped', 'pass']);
  });

  it('after a bridge start with nothing heard yet, a fill at or below the saved seq waits as a possible restart: the old session\'s market data rejects it, and the exchange\'s next fill passes', () => {
    const judge = new SessionJudge(SETTINGS, { clearing: { seq: 50 }, market_data: { seq: 104, ts: 1002n * S, sender: EXCHANGE }, at: 1_000_000 });
    let now = 1_000_500;
    expect(kinds(judge.observe('clearing', fill(45, 2, 999), FORGER, now))).toEqual(['opened']);
    expect(judge.held('clearing')).toBe(1);
    expect(kinds(judge.observe('market_data', hb(105, 1003), EXCHANGE, (now += 10)))).toEqual(['rejected', 'pass']);
    expect(kinds(judge.observe('clearing', fill(51), EXCHANGE_CLEARING, (now += 10)))).toEqual(['pass']);
    expect(judge.lastSeq('clearing')).toBe(51);
  });

  it('after a bridge start, the first fill from another host than market data\'s (the exchange sends both) is held; the exchange\'s own fill at that seq is applied and the pair flagged', () => {
    const judge = new SessionJudge(SETTINGS, { clearing: { seq: 50 }, market_data: { seq: 104, ts: 1002n * S }, at: 1_000_000 });
    let now = 1_000_500;
    expect(kinds(judge.observe('market_data', hb(105, 1003), EXCHANGE, now))).toEqual(['pass']);
    const ds = judge.observe('clearing', fill(51, 2, 999), FORGER, (now += 10));
    expect(kinds(ds)).toEqual(['opened']);
    expect((ds[0] as Extract<Decision, { kind: 'opened' }>).verdict.waiting).toContain(`market data is heard from ${EXCHANGE}`);
    const real = judge.observe('clearing', fill(51), EXCHANGE_CLEARING, (now += 10));
    expect(kinds(real)).toEqual(['conflict', 'dropped', 'pass']);
    expect((real[0] as Extract<Decision, { kind: 'conflict' }>).applied.sender).toBe(EXCHANGE_CLEARING);
    // From then on the clearing feed's own sender is known: the forger is held as before.
    expect(kinds(judge.observe('clearing', fill(52, 2, 999), FORGER, (now += 10)))).toEqual(['opened']);
  });

  it('an exchange restart while no bridge listened, its new clearing seq a little below the saved one: the fill waits for the restart and is applied after the reset', () => {
    const judge = new SessionJudge(SETTINGS, { clearing: { seq: 50 }, market_data: { seq: 5000, ts: 1002n * S }, at: 1_000_000 });
    let now = 1_000_500;
    // The restarted exchange's market data: a new run from seq 3 (the bridge missed 0..2).
    expect(kinds(judge.observe('market_data', hb(3, 1100), RESTARTED, now))).toEqual(['opened']);
    expect(judge.observe('clearing', fill(30, 2, 7), RESTARTED_CLEARING, (now += 10))).toEqual([]);
    expect(judge.held('clearing')).toBe(1);
    let last: Decision[] = [];
    for (let seq = 4; last.length === 0 && seq < 40; seq++) last = judge.observe('market_data', hb(seq, 1100 + seq / 2), RESTARTED, (now += 500));
    expect(kinds(last)).toEqual(['accepted']);
    expect((last[0] as Extract<Decision, { kind: 'accepted' }>).clearing.map((m) => m.seq)).toEqual([30]);
  });

  it('market data: another sender\'s message at the next seq, ahead of the exchange\'s, is held; the exchange\'s is applied and the pair flagged', () => {
    const { judge, now } = running();
    expect(kinds(judge.observe('market_data', { type: 'new_order', seq: 105, timestamp: 1003n * S, order_id: 9n, symbol: 4, side: 1, quantity: 10, price: 1, flags: 0 }, FORGER, now + 1))).toEqual(['opened']);
    const real = judge.observe('market_data', hb(105, 1003), EXCHANGE, now + 2);
    expect(kinds(real)).toEqual(['conflict', 'dropped', 'pass']);
    expect((real[0] as Extract<Decision, { kind: 'conflict' }>).applied.sender).toBe(EXCHANGE);
  });

  it('a far jump sent as a run (5,000,000 on, in order) is held as a whole and dropped when the session goes on', () => {
    const { judge, now } = running();
    expect(kinds(judge.observe('clearing', fill(5_000_000), FORGER, now + 1))).toEqual(['opened']);
    for (let i = 1; i < 5; i++) expect(judge.observe('clearing', fill(5_000_000 + i), FORGER, now + 1 + i)).toEqual([]);
    expect(judge.held('clearing')).toBe(5);
    const next = judge.observe('clearing', fill(52), EXCHANGE_CLEARING, now + 20);
    expect(kinds(next)).toEqual(['dropped', 'pass']);
    expect((next[0] as Extract<Decision, { kind: 'dropped' }>).strays).toBe(5);
    // And from the exchange's own socket (spoofed), a far jump is held all the same.
    expect(kinds(judge.observe('clearing', fill(5_000_100), EXCHANGE_CLEARING, now + 30))).toEqual(['opened']);
  });

  it('a duplicate seq further back than the reorder window, with other content, is no restart and resets nothing', () => {
    const { judge, now } = running();
    for (let seq = 52; seq < 200; seq++) judge.observe('clearing', fill(seq), EXCHANGE_CLEARING, now);
    const ds = judge.observe('clearing', fill(60, 2, 999), FORGER, now + 1);
    expect(kinds(ds)).toEqual(['opened']);
    expect(kinds(judge.observe('clearing', fill(200), EXCHANGE_CLEARING, now + 2))).toEqual(['rejected', 'pass']);
    expect(judge.lastSeq('clearing')).toBe(200);
  });
});

describe('SessionJudge: verdicts restored after a bridge restart', () => {
  const restoredRun = (kind: 'restart' | 'jump', seqs: number[], status: 'pending' | 'rejected' = 'pending') => ({
    verdict: { id: 'v-old-1', kind, status, downtime: false, impostor: false, opened_at: 1, waiting: 'earlier' },
    sender: RESTARTED_CLEARING,
    msgs: seqs.map((s) => fill(s)),
  });

  it('waits for the operator; the same sender\'s next seqs join it, kept; confirmed, every message is handed back in order', () => {
    const held: number[] = [];
    const judge = new SessionJudge(SETTINGS, { clearing: { seq: 500 } }, { held: (_v, _r, m) => void held.push(m.seq) });
    const v = judge.restore(restoredRun('restart', [1, 2, 3]), 2_000_000);
    expect(v.waiting).toMatch(/restored after a bridge restart/);
    expect(judge.observe('clearing', fill(4), RESTARTED_CLEARING, 2_000_010)).toEqual([]);
    // A copy of one held: counted as a duplicate, not held again.
    expect(kinds(judge.observe('clearing', fill(2), RESTARTED_CLEARING, 2_000_020))).toEqual(['duplicate']);
    expect(held).toEqual([4]);
    expect(judge.tick(2_100_000)).toEqual([]);
    const ds = judge.decide('v-old-1', 'confirm', 'op', 2_100_000)!;
    expect(kinds(ds)).toEqual(['accepted']);
    expect((ds[0] as Extract<Decision, { kind: 'accepted' }>).clearing.map((m) => m.seq)).toEqual([1, 2, 3, 4]);
    expect(judge.lastSeq('clearing')).toBe(4);
  });

  it('the old session going on rejects a restored restart (still confirmable) and drops a restored jump as strays, as before the stop', () => {
    const a = new SessionJudge(SETTINGS, { clearing: { seq: 500 } });
    a.restore(restoredRun('restart', [1, 2]), 2_000_000);
    expect(kinds(a.observe('clearing', fill(501), EXCHANGE_CLEARING, 2_000_010))).toEqual(['rejected', 'pass']);
    expect(a.verdicts().map((v) => v.status)).toEqual(['rejected']);
    const b = new SessionJudge(SETTINGS, { clearing: { seq: 500 } });
    b.restore(restoredRun('jump', [90_000]), 2_000_000);
    expect(kinds(b.observe('clearing', fill(501), EXCHANGE_CLEARING, 2_000_010))).toEqual(['dropped', 'pass']);
    expect(b.held('clearing')).toBe(0);
  });

  it('a restored run measures its believable gap from when its last fill was heard, the bridge\'s downtime included, as the same run never restored does', () => {
    const t0 = 1_000_000;
    const saved = { clearing: { seq: 11, sender: EXCHANGE_CLEARING }, at: t0 };
    const heldRuns = (j: SessionJudge) => j.verdicts().map((v) => v.runs.clearing!.msgs.map((m) => m.seq));
    // Fill 20 heard at t0 + 10 (a restart while no bridge listened, or a gap); the exchange's next one a minute on, 5,000 seqs further.
    const live = new SessionJudge(SETTINGS, saved);
    expect(kinds(live.observe('clearing', fill(20), EXCHANGE_CLEARING, t0 + 10))).toEqual(['opened']);
    const restored = new SessionJudge(SETTINGS, { ...saved, at: t0 + 20 });
    const v = live.verdicts()[0]!;
    const heard = v.runs.clearing!;
    const record = { id: v.id, kind: v.kind, status: v.status, downtime: v.downtime, impostor: false, opened_at: v.openedAt, waiting: v.waiting };
    restored.restore({ verdict: record, sender: heard.sender, msgs: [fill(20)], firstAt: heard.firstAt, lastAt: heard.lastAt }, t0 + 60_000);
    for (const j of [live, restored]) {
      expect(j.observe('clearing', fill(5020), EXCHANGE_CLEARING, t0 + 61_000)).toEqual([]);
      expect(heldRuns(j)).toEqual([[20, 5020]]);
      expect(j.verdicts()[0]!.runs.clearing!.missed).toBe(4999);
    }
    // Beyond 1,000 + 1,000/s since the run was last heard: no continuation of it, in both alike.
    const far = (j: SessionJudge) => kinds(j.observe('clearing', fill(5020 + 1000 + 2000), EXCHANGE_CLEARING, t0 + 62_000));
    expect(far(restored)).toEqual(far(live));
    expect(heldRuns(restored)).toEqual(heldRuns(live));
  });

  it('a copy with other content of a restored run\'s message, from its socket: a conflict naming the verdict; the restored one kept and handed back', () => {
    const judge = new SessionJudge(SETTINGS, { clearing: { seq: 500 } });
    const v = judge.restore(restoredRun('restart', [1, 2, 3]), 2_000_000);
    const copy = fill(2, 3, 999);
    expect(judge.observe('clearing', copy, RESTARTED_CLEARING, 2_000_010)).toEqual([
      { kind: 'conflict', feed: 'clearing', seq: 2, applied: { sender: RESTARTED_CLEARING, fingerprint: fingerprint(fill(2)), msg: fill(2) }, other: { sender: RESTARTED_CLEARING, fingerprint: fingerprint(copy), msg: copy }, heldBy: v },
    ]);
    const ds = judge.decide(v.id, 'confirm', 'op', 2_000_020)!;
    expect((ds[0] as Extract<Decision, { kind: 'accepted' }>).clearing).toEqual([fill(1), fill(2), fill(3)]);
  });

  it('a run finished at the start leaves the followed run after it; after a restart, market data\'s saved progress is forgotten', () => {
    const judge = new SessionJudge(SETTINGS, { clearing: { seq: 1 }, market_data: { seq: 9_000, ts: 5_000n * S } });
    judge.appliedAtStart(true, [fill(1), fill(2), fill(3)]);
    expect(judge.lastSeq('clearing')).toBe(3);
    // The new session's market data, below the old session's saved seq and time, is followed: no new restart verdict.
    expect(kinds(judge.observe('market_data', hb(5, 10), RESTARTED, 2_000_000))).toEqual(['pass']);
    expect(kinds(judge.observe('clearing', fill(4), RESTARTED_CLEARING, 2_000_010))).toEqual(['pass']);
  });
});

describe('SessionJudge: the clearing socket the last bridge heard', () => {
  const saved = { clearing: { seq: 51, sender: EXCHANGE_CLEARING }, market_data: { seq: 104, ts: 1002n * S, sender: EXCHANGE }, at: 1_000_000 };

  it('a first fill from another socket on the exchange\'s host is held; the saved socket\'s fill at that seq is applied and the pair flagged', () => {
    const judge = new SessionJudge(SETTINGS, saved);
    expect(kinds(judge.observe('market_data', hb(105, 1003), EXCHANGE, 1_000_500))).toEqual(['pass']);
    const spoof = '10.0.0.1:5999';
    const ds = judge.observe('clearing', fill(52, 2, 999), spoof, 1_000_510);
    expect(kinds(ds)).toEqual(['opened']);
    expect((ds[0] as Extract<Decision, { kind: 'opened' }>).verdict.waiting).toMatch(/last bridge heard the session's fills from 10\.0\.0\.1:5001/);
    expect(kinds(judge.observe('clearing', fill(52), EXCHANGE_CLEARING, 1_000_520))).toEqual(['conflict', 'dropped', 'pass']);
    expect(judge.followedSender('clearing')).toBe(EXCHANGE_CLEARING);
  });

  it('a forged restart while no bridge listened, disproved by the exchange: a held fill from another socket than the saved one stays held (not the old session\'s after a gap)', () => {
    const judge = new SessionJudge(SETTINGS, saved);
    expect(kinds(judge.observe('market_data', hb(0, 1003), FORGER, 1_000_500))).toEqual(['opened']);
    expect(judge.observe('clearing', fill(60, 2, 999), '10.0.0.9:7001', 1_000_510)).toEqual([]);
    const ds = judge.observe('market_data', hb(105, 1003), EXCHANGE, 1_000_600);
    expect(kinds(ds)).toEqual(['rejected', 'pass']);
    expect(judge.held('clearing')).toBe(1);
    // The exchange's own next fill is applied; the forged one never is.
    expect(kinds(judge.observe('clearing', fill(52), EXCHANGE_CLEARING, 1_000_700))).toEqual(['pass']);
  });

  it('market data from another exchange process than the saved one: a new clearing socket is no forger by itself (the restart logic decides)', () => {
    const judge = new SessionJudge(SETTINGS, saved);
    // The exchange restarted while no bridge listened, its new session already past the old seqs on both feeds.
    expect(kinds(judge.observe('market_data', hb(300, 2000), RESTARTED, 1_000_500))).toEqual(['pass']);
    const ds = judge.observe('clearing', fill(60), RESTARTED_CLEARING, 1_000_510);
    expect(kinds(ds)).toEqual(['opened']);
    const v = (ds[0] as Extract<Decision, { kind: 'opened' }>).verdict;
    expect(v).toMatchObject({ kind: 'restart', downtime: true });
    expect(v.impostor).toBeUndefined();
  });
});

describe('a real exchange restart with a forged datagram in its window', () => {
  /** The old session running, then the restarted exchange: market data from seq 0, fills 1..20 held. */
  function restarting() {
    const released: string[] = [];
    const judge = new SessionJudge(SETTINGS, {}, { released: (v, run) => void released.push(`${v.id} ${run.sender} ${run.from}`) });
    let now = 1_000_000;
    for (let i = 0; i < 5; i++) judge.observe('market_data', hb(100 + i, 1000 + i / 2), EXCHANGE, (now += 500));
    judge.observe('clearing', fill(50), EXCHANGE_CLEARING, now);
    const started = now + 500;
    expect(kinds(judge.observe('market_data', hb(0, 1003), RESTARTED, started))).toEqual(['opened']);
    for (let seq = 1; seq <= 20; seq++) expect(judge.observe('clearing', fill(seq, 2, seq), RESTARTED_CLEARING, started + seq)).toEqual([]);
    return { judge, started, released };
  }
  /** Market data of the new session until a decision; the decisions. */
  function untilDecided(judge: SessionJudge, started: number, from = 1): Decision[] {
    for (let seq = from; seq < 40; seq++) {
      const ds = judge.observe('market_data', hb(seq, 1003 + seq / 2), RESTARTED, started + seq * 500);
      if (ds.length > 0) return ds;
    }
    return [];
  }

  for (const [where, forger] of [['on the exchange\'s host (another port)', '10.0.0.1:7777'], ['on another host', FORGER]] as const) {
    it(`a fill at seq 1 from a forger ${where}: held on its own, the held fills 1..20 kept (not released) and applied on evidence`, () => {
      const { judge, started, released } = restarting();
      const restartId = judge.verdicts()[0]!.id;
      const ds = judge.observe('clearing', fill(1, 3, 999), forger, started + 100);
      expect(kinds(ds)).toEqual(['opened']);
      const rival = (ds[0] as Extract<Decision, { kind: 'opened' }>).verdict;
      expect(rival).toMatchObject({ kind: 'jump', rival: true });
      expect(rival.waiting).toContain(`possible restart ${restartId} holds one from ${RESTARTED_CLEARING}`);
      expect(released).toEqual([]);
      expect(judge.held('clearing')).toBe(21);
      const decided = untilDecided(judge, started);
      expect(kinds(decided)).toEqual(['accepted']);
      const accepted = decided[0] as Extract<Decision, { kind: 'accepted' }>;
      expect(accepted.by).toBe('evidence');
      expect(accepted.clearing.map((m) => m.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      expect(accepted.clearing.every((m) => m.type === 'fill' && m.client_id === 2)).toBe(true);
      expect(released).toEqual([]);
      // The exchange's next fill goes on from its run; the forged one is dropped, never applied.
      const next = judge.observe('clearing', fill(21, 2), RESTARTED_CLEARING, started + 20_000);
      expect(kinds(next)).toEqual(['dropped', 'pass']);
      expect(released).toEqual([`${rival.id} ${forger} 1`]);
    });
  }

  it('a clearing run from another host held first gives way to the exchange\'s (the market-data run\'s host): its operator-only reason goes with it', () => {
    const judge = new SessionJudge(SETTINGS);
    let now = 1_000_000;
    for (let i = 0; i < 5; i++) judge.observe('market_data', hb(100 + i, 1000 + i / 2), EXCHANGE, (now += 500));
    judge.observe('clearing', fill(50), EXCHANGE_CLEARING, now);
    const started = now + 500;
    judge.observe('market_data', hb(0, 1003), RESTARTED, started);
    judge.observe('clearing', fill(1, 3, 999), FORGER, started + 1);
    expect(judge.verdicts()[0]!.operatorOnly).toMatch(`the clearing run comes from ${FORGER}`);
    expect(kinds(judge.observe('clearing', fill(1, 2), RESTARTED_CLEARING, started + 2))).toEqual(['opened']);
    expect(judge.verdicts()[0]!.operatorOnly).toBeUndefined();
    const decided = untilDecided(judge, started);
    expect(kinds(decided)).toEqual(['accepted']);
    expect((decided[0] as Extract<Decision, { kind: 'accepted' }>).clearing).toEqual([fill(1, 2)]);
  });

  it('a forged market-data message at seq 0 from the exchange\'s host does not start the window again', () => {
    const plain = restarting();
    const expected = untilDecided(plain.judge, plain.started);
    expect(kinds(expected)).toEqual(['accepted']);
    const at = (expected[0] as Extract<Decision, { kind: 'accepted' }>).md.length;
    const { judge, started } = restarting();
    for (let seq = 1; seq <= 5; seq++) expect(judge.observe('market_data', hb(seq, 1003 + seq / 2), RESTARTED, started + seq * 500)).toEqual([]);
    expect(kinds(judge.observe('market_data', hb(0, 1100), '10.0.0.1:7777', started + 2600))).toEqual(['opened']);
    const decided = untilDecided(judge, started, 6);
    expect(kinds(decided)).toEqual(['accepted']);
    expect((decided[0] as Extract<Decision, { kind: 'accepted' }>).md.length).toBe(at);
  });
});

describe('a datagram lost inside a held run (UDP: the same sender\'s next seq is last + 2)', () => {
  /** The old session running (market data 100..104, clearing 50), then the restarted exchange's market data from seq 0. */
  function restarted(oldClearing = 50) {
    const released: string[] = [];
    const judge = new SessionJudge(SETTINGS, {}, { released: (v, run) => void released.push(`${v.id} ${run.sender} ${run.from}`) });
    let now = 1_000_000;
    for (let i = 0; i < 5; i++) judge.observe('market_data', hb(100 + i, 1000 + i / 2), EXCHANGE, (now += 500));
    judge.observe('clearing', fill(oldClearing), EXCHANGE_CLEARING, now);
    const started = now + 500;
    expect(kinds(judge.observe('market_data', hb(0, 1003), RESTARTED, started))).toEqual(['opened']);
    return { judge, started, released };
  }
  /** The new session's market data, `lost` seqs never arriving, until a decision; the decisions and the last seq sent. */
  function untilDecided(judge: SessionJudge, started: number, lost: number[] = []): { ds: Decision[]; seq: number } {
    for (let seq = 1; seq < 40; seq++) {
      if (lost.includes(seq)) continue;
      const ds = judge.observe('market_data', hb(seq, 1003 + seq / 2), RESTARTED, started + seq * 500);
      if (ds.length > 0) return { ds, seq };
    }
    return { ds: [], seq: 40 };
  }
  const accepted = (ds: Decision[]) => ds[0] as Extract<Decision, { kind: 'accepted' }>;
  const upTo = (n: number, lost: number[] = []) => Array.from({ length: n }, (_, i) => i + 1).filter((s) => !lost.includes(s));

  // The old session's last seq within the reorder window of the new one's, and far above it.
  for (const oldClearing of [50, 5000]) it(`clearing fills 1..20 of a restart held, seq 7 lost (the old session at ${oldClearing}): the run goes on past the gap, nothing released; accepted on evidence with the 19 fills`, () => {
    const { judge, started, released } = restarted(oldClearing);
    for (const seq of upTo(20, [7])) expect(judge.observe('clearing', fill(seq, 2, seq), RESTARTED_CLEARING, started + seq)).toEqual([]);
    expect(judge.verdicts()).toHaveLength(1);
    expect(judge.held('clearing')).toBe(19);
    const { ds } = untilDecided(judge, started);
    expect(kinds(ds)).toEqual(['accepted']);
    expect(accepted(ds).by).toBe('evidence');
    expect(accepted(ds).clearing.map((m) => m.seq)).toEqual(upTo(20, [7]));
    expect(released).toEqual([]);
    // Lost for good as far as the judge knows; the new session goes on from its run.
    expect(kinds(judge.observe('clearing', fill(21, 2), RESTARTED_CLEARING, started + 20_000))).toEqual(['pass']);
  });

  it('the lost seq arriving late from the run\'s socket takes its place in the held run, once', () => {
    const { judge, started } = restarted();
    for (const seq of upTo(10, [7])) judge.observe('clearing', fill(seq, 2, seq), RESTARTED_CLEARING, started + seq);
    expect(judge.observe('clearing', fill(7, 2, 7), RESTARTED_CLEARING, started + 11)).toEqual([]);
    // Once in its place, the same again is a copy: counted, as on a followed run, and dropped.
    expect(judge.observe('clearing', fill(7, 2, 7), RESTARTED_CLEARING, started + 12)).toEqual([{ kind: 'duplicate', feed: 'clearing', seq: 7, sender: RESTARTED_CLEARING, first: RESTARTED_CLEARING }]);
    expect(judge.held('clearing')).toBe(10);
    const { ds } = untilDecided(judge, started);
    expect(accepted(ds).clearing.map((m) => m.seq)).toEqual(upTo(10));
  });

  it('a copy with other content of a held message from the run\'s own socket (its first, one inside, one filled late, its last): a conflict each, the held one kept and accepted', () => {
    const { judge, started } = restarted();
    for (const seq of upTo(10, [7])) judge.observe('clearing', fill(seq, 2, seq), RESTARTED_CLEARING, started + seq);
    judge.observe('clearing', fill(7, 2, 7), RESTARTED_CLEARING, started + 11);
    const v = judge.verdicts()[0]!;
    for (const seq of [1, 5, 7, 10]) {
      const copy = fill(seq, 3, 999);
      expect(judge.observe('clearing', copy, RESTARTED_CLEARING, started + 20 + seq)).toEqual([
        { kind: 'conflict', feed: 'clearing', seq, applied: { sender: RESTARTED_CLEARING, fingerprint: fingerprint(fill(seq, 2, seq)), msg: fill(seq, 2, seq) }, other: { sender: RESTARTED_CLEARING, fingerprint: fingerprint(copy), msg: copy }, heldBy: v },
      ]);
    }
    // The same content again is a copy, nothing more: counted as one.
    expect(judge.observe('clearing', fill(5, 2, 5), RESTARTED_CLEARING, started + 40)).toEqual([{ kind: 'duplicate', feed: 'clearing', seq: 5, sender: RESTARTED_CLEARING, first: RESTARTED_CLEARING }]);
    expect(judge.held('clearing')).toBe(10);
    const { ds } = untilDecided(judge, started);
    expect(kinds(ds)).toEqual(['accepted']);
    expect(accepted(ds).clearing).toEqual(upTo(10).map((s) => fill(s, 2, s)));
  });

  it('market data of a restart with seqs lost: its run goes on and the evidence holds (the messages heard count), accepted when the same run without the loss is', () => {
    const plain = restarted();
    plain.judge.observe('clearing', fill(1), RESTARTED_CLEARING, plain.started + 1);
    const expected = untilDecided(plain.judge, plain.started);
    expect(kinds(expected.ds)).toEqual(['accepted']);
    const { judge, started } = restarted();
    judge.observe('clearing', fill(1), RESTARTED_CLEARING, started + 1);
    const { ds, seq } = untilDecided(judge, started, [3, 4]);
    expect(kinds(ds)).toEqual(['accepted']);
    expect(seq).toBe(expected.seq);
    expect(accepted(ds).md.map((m) => m.seq)).toEqual([0, ...upTo(seq, [3, 4])]);
    expect(accepted(ds).clearing.map((m) => m.seq)).toEqual([1]);
  });

  it('a jump far beyond any believable gap inside a held run is no continuation of it: held apart as before, the held run kept and going on', () => {
    const { judge, started, released } = restarted();
    for (const seq of upTo(6)) judge.observe('clearing', fill(seq, 2, seq), RESTARTED_CLEARING, started + seq);
    const far = judge.observe('clearing', fill(5_000_006, 2), RESTARTED_CLEARING, started + 7);
    expect(kinds(far)).toEqual(['opened']);
    expect((far[0] as Extract<Decision, { kind: 'opened' }>).verdict.kind).toBe('jump');
    expect(judge.observe('clearing', fill(7, 2, 7), RESTARTED_CLEARING, started + 8)).toEqual([]);
    expect(kinds(judge.observe('market_data', hb(2_000_000, 1003.5), RESTARTED, started + 500))).toEqual(['opened']);
    expect(released).toEqual([]);
    const { ds } = untilDecided(judge, started, [1]);
    expect(kinds(ds)).toEqual(['accepted']);
    expect(accepted(ds).clearing.map((m) => m.seq)).toEqual(upTo(7));
  });

  it('a restart claimed from the old session\'s own socket: the old session going on (within a believable gap of the held run) still disproves it', () => {
    const { judge, now } = running();
    // Timestamps just above the old session's, as a forger spoofing the exchange's address would send them.
    const at = (seq: number, ms: bigint): MdMessage => ({ type: 'heartbeat', seq, timestamp: 1002n * S + ms * 1_000_000n });
    for (const seq of [0, 1, 2]) judge.observe('market_data', at(seq, 100n + BigInt(seq) * 100n), EXCHANGE, now + 100 + seq * 100);
    expect(judge.verdicts().map((v) => v.kind)).toEqual(['restart']);
    expect(kinds(judge.observe('market_data', hb(105, 1003), EXCHANGE, now + 500))).toEqual(['rejected', 'pass']);
  });
});

describe('ProblemBook.merge: a problem the standby raised, taken into the bridge\'s', () => {
  it('is counted in with the bridge\'s of its id: events added, the first since, the newest detail and time', () => {
    const book = new ProblemBook();
    book.raise({ id: 'conflict-clearing', kind: 'conflict', feed: 'clearing', detail: 'the bridge\'s', actions: ['ack'] }, 100);
    book.merge({ id: 'conflict-clearing', kind: 'conflict', feed: 'clearing', detail: 'the standby\'s', actions: ['ack'], count: 2, since: 50, ts: 200 });
    expect(book.list()).toEqual([{ id: 'conflict-clearing', kind: 'conflict', feed: 'clearing', detail: 'the standby\'s', actions: ['ack'], count: 3, since: 50, ts: 200 }]);
    book.merge({ id: 'conflict-clearing', kind: 'conflict', feed: 'clearing', detail: 'an older one', actions: ['ack'], count: 1, since: 10, ts: 20 });
    expect(book.get('conflict-clearing')).toMatchObject({ detail: 'the standby\'s', count: 4, since: 10, ts: 200 });
    book.merge({ id: 'gap-clearing', kind: 'gap', feed: 'clearing', detail: 'new here', actions: ['ack'], count: 1, since: 30, ts: 30 });
    expect(book.get('gap-clearing')).toMatchObject({ count: 1, since: 30, ts: 30 });
  });
});
