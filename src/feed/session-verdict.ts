import type { ClearingMessage, MdMessage } from '../../proto/ndfex.js';
import type { FeedCounters } from '../../proto/marketdata.js';
import type { Logger } from '../shared/log.js';
import type { SendAlert } from './alerts.js';
import type { ClearingFeed } from './clearing.js';
import type { MarketDataIntake } from './md-intake.js';
import type { ProblemBook } from './problems.js';
import type { MdProgress } from './session.js';
import type { AnyMsg, Decision, FeedName, SessionJudge, Verdict } from './verdict.js';

export interface SessionVerdictDeps {
  clearing: Pick<ClearingFeed, 'accept' | 'beginNewSession' | 'counters'>;
  md: Pick<MarketDataIntake, 'apply' | 'restart' | 'counters'>;
  problems: ProblemBook;
  alert: SendAlert;
  log: Logger;
}

type Not<K extends Decision['kind']> = Exclude<Decision, { kind: K }>;
type Of<K extends Decision['kind']> = Extract<Decision, { kind: K }>;

/**
 * Acts on the exchange-session verdict (verdict.ts): every decoded message of
 * both feeds goes through the judge, and this applies what it lets through,
 * and counts, alerts and keeps as standing problems what it holds, rejects or
 * drops. It does no I/O of its own (the feeds, alerts and problems are given),
 * so the whole path from message to decision runs in a unit test.
 */
export class SessionVerdict {
  constructor(
    private readonly judge: SessionJudge,
    private readonly deps: SessionVerdictDeps,
  ) {}

  observeClearing(m: ClearingMessage, sender: string, now = Date.now()): void {
    this.act(this.judge.observe('clearing', m, sender, now), now);
  }

  /** A live datagram's messages: what the judge lets through is applied as one batch. */
  observeMarketData(msgs: MdMessage[], sender: string, now = Date.now()): void {
    const ds: Decision[] = [];
    for (const m of msgs) for (const x of this.judge.observe('market_data', m, sender, now)) ds.push(x);
    this.act(ds, now);
  }

  /** Time passes between messages: pending verdicts are looked at again, and their problems say how far the evidence got. */
  tick(now = Date.now()): void {
    this.act(this.judge.tick(now), now);
    for (const v of this.judge.verdicts()) if (v.status === 'pending') this.deps.problems.describe(v.id, describeVerdict(v));
  }

  /** Whether a verdict of that id waits for the operator's decision. */
  waits(id: string): boolean {
    return this.judge.verdicts().some((v) => v.id === id);
  }

  /** The operator's decision; false when no verdict of that id waits for one. */
  decide(id: string, decision: 'confirm' | 'reject', by: string, now = Date.now()): boolean {
    const ds = this.judge.decide(id, decision, by, now);
    if (!ds) return false;
    this.act(ds, now);
    return true;
  }

  /** An acknowledged rejected restart drops what it held: the operator has seen it and does not confirm it. False when none is. */
  dropRejected(id: string, by: string, now = Date.now()): boolean {
    const live = this.judge.verdicts().find((v) => v.id === id && v.status === 'rejected');
    if (live) this.act(this.judge.decide(live.id, 'reject', by, now) ?? [], now);
    return !!live;
  }

  held(feed: FeedName): number {
    return this.judge.held(feed);
  }

  /** Market data's progress with who sends the run followed, as saved for the next start to compare with. */
  mdProgress(p: { seq: number; ts: bigint }): MdProgress {
    const sender = this.judge.followedSender('market_data');
    return sender === null ? p : { ...p, sender };
  }

  /** In order; market-data messages let through are applied in batches between the other decisions. */
  private act(ds: Decision[], now: number): void {
    let pass: MdMessage[] = [];
    for (const d of ds) {
      if (d.kind === 'pass') {
        if (d.feed === 'clearing') this.deps.clearing.accept(d.msg as ClearingMessage);
        else pass.push(d.msg as MdMessage);
        continue;
      }
      this.deps.md.apply(pass);
      pass = [];
      this.on(d, now);
    }
    this.deps.md.apply(pass);
  }

  private on(d: Not<'pass'>, now: number): void {
    switch (d.kind) {
      case 'conflict':
        return this.conflict(d, now);
      case 'opened':
        return this.opened(d.verdict, now);
      case 'rejected':
        return this.rejected(d, now);
      case 'dropped':
        return this.dropped(d, now);
      case 'accepted':
        return this.accepted(d);
    }
  }

  private counters(feed: FeedName): FeedCounters {
    return feed === 'clearing' ? this.deps.clearing.counters : this.deps.md.counters;
  }

  private conflict(d: Of<'conflict'>, now: number): void {
    const c = this.counters(d.feed);
    c.conflicts = (c.conflicts ?? 0) + 1;
    const detail = `${d.feed} seq ${d.seq} came twice with other content: applied ${d.applied.fingerprint} from ${d.applied.sender} (${describeMsg(d.applied.msg)}), not ${d.other.fingerprint} from ${d.other.sender} (${describeMsg(d.other.msg)})`;
    this.deps.log.warn({ feed: d.feed, seq: d.seq, applied: d.applied.fingerprint, other: d.other.fingerprint, appliedFrom: d.applied.sender, otherFrom: d.other.sender }, 'seq conflict');
    this.deps.alert(d.feed, { kind: 'conflict', detail, received: d.seq, fingerprints: [d.applied.fingerprint, d.other.fingerprint] });
    this.deps.problems.raise({ id: `conflict-${d.feed}`, kind: 'conflict', feed: d.feed, detail: `latest: ${detail}`, actions: ['ack'] }, now);
  }

  private opened(v: Verdict, now: number): void {
    const feed = feedOf(v);
    if (v.kind === 'jump') this.counters(v.feed).jumps = (this.counters(v.feed).jumps ?? 0) + 1;
    const detail = `${describeVerdict(v)}; the session followed: ${(['market_data', 'clearing'] as const).map((f) => `${f} ${this.judge.followedAt(f)}`).join(', ')}`;
    this.deps.log.warn({ verdict: v.id, kind: v.kind, feed: v.feed, detail }, 'exchange session verdict pending');
    this.deps.alert(feed, { kind: v.kind === 'jump' && !v.impostor ? 'far_jump' : 'verdict_pending', detail, verdict: v.id, received: v.runs[feed]?.from });
    this.deps.problems.raise({ id: v.id, kind: 'verdict_pending', feed, detail, actions: ['confirm', 'reject'] }, now);
  }

  private rejected({ verdict: v, why }: Of<'rejected'>, now: number): void {
    const feed = firstFeed(v);
    const c = this.counters(feed);
    c.rejected_restarts = (c.rejected_restarts ?? 0) + 1;
    const detail = `claimed exchange restart rejected, nothing reset: ${why}; its messages are held, never applied (forged, or the operator may still confirm it)`;
    this.deps.log.warn({ verdict: v.id, why }, 'exchange restart rejected');
    this.deps.alert(feed, { kind: 'restart_rejected', detail, verdict: v.id });
    this.deps.problems.raise({ id: v.id, kind: 'restart_rejected', feed, detail, actions: ['confirm', 'ack'] }, now);
  }

  private dropped(d: Of<'dropped'>, now: number): void {
    const v = d.verdict;
    const feed = feedOf(v);
    const c = this.counters(feed);
    c.strays = (c.strays ?? 0) + d.strays;
    const detail = `${feed}: ${d.strays} message(s) from seq ${v.runs[feed]?.from ?? '?'} ignored, never applied: ${d.why}`;
    this.deps.log.warn({ verdict: v.id, strays: d.strays, why: d.why }, 'held messages dropped');
    this.deps.alert(feed, { kind: 'stray', detail, verdict: v.id, received: v.runs[feed]?.from });
    const problems = this.deps.problems;
    problems.resolve(v.id);
    if (d.byOperator) this.deps.alert(feed, { kind: 'verdict_decided', detail: `verdict ${v.id} ${d.why}`, verdict: v.id });
    else if (v.kind === 'jump') problems.raise({ id: `jump-rejected-${feed}`, kind: 'jump_rejected', feed, detail: `runs held and dropped, never applied: far seq jumps or another sender continuing the session (latest: ${detail})`, actions: ['ack'] }, now);
    else problems.raise({ id: 'restart-rejected', kind: 'restart_rejected', feed, detail: `claimed exchange restarts not believed, nothing reset (latest: ${detail})`, actions: ['ack'] }, now);
  }

  private accepted(d: Of<'accepted'>): void {
    const v = d.verdict;
    this.deps.problems.resolve(v.id);
    this.deps.log.warn({ verdict: v.id, by: d.by, detail: d.detail }, 'exchange session verdict accepted');
    if (d.by === 'operator') this.deps.alert(feedOf(v), { kind: 'verdict_decided', detail: `verdict ${v.id} ${d.detail}`, verdict: v.id });
    if (v.kind === 'restart') {
      this.deps.md.restart();
      this.deps.alert('market_data', { kind: 'exchange_restart', detail: `${d.detail}; books cleared`, verdict: v.id });
      // The marker goes into the stream (a publisher barrier) before any fill of the new session.
      this.deps.clearing.beginNewSession(d.detail, d.clearing[0]?.seq ?? 0);
    }
    for (const m of d.clearing) this.deps.clearing.accept(m);
    this.deps.md.apply(d.md);
  }
}

/** The feed a restart verdict was first seen on. */
const firstFeed = (v: Verdict): FeedName => {
  const c = v.runs.clearing;
  const m = v.runs.market_data;
  return c && (!m || c.firstAt <= m.firstAt) ? 'clearing' : m ? 'market_data' : v.feed;
};

/** The feed a verdict is told on: a jump's own, a restart's first. */
const feedOf = (v: Verdict): FeedName => (v.kind === 'jump' ? v.feed : firstFeed(v));

const describeMsg = (m: AnyMsg): string => JSON.stringify(m, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));

function describeVerdict(v: Verdict): string {
  const runs = (['market_data', 'clearing'] as const)
    .filter((f) => v.runs[f])
    .map((f) => `${f} from seq ${v.runs[f]!.from} (${v.runs[f]!.count} message(s) from ${v.runs[f]!.sender}, held)`)
    .join(', ');
  const what = v.impostor ? `another sender continuing ${v.feed}'s seq` : v.kind === 'jump' ? `far seq jump on ${v.feed}` : v.downtime ? 'possible exchange restart while no bridge listened' : 'possible exchange restart';
  const choice = v.downtime ? ' (confirm: a new exchange session, positions reset under the restart policy; reject: the old session\'s fills after a gap)' : '';
  return `${what}: ${runs}; ${v.waiting || 'waiting'}${choice}`;
}
