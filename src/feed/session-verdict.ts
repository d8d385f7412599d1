import type { ClearingMessage, MdMessage } from '../../proto/ndfex.js';
import type { FeedCounters } from '../../proto/marketdata.js';
import type { Logger } from '../shared/log.js';
import type { SendAlert } from './alerts.js';
import type { ClearingFeed } from './clearing.js';
import { finishing, type HeldKeeper, type StoredRun } from './held-store.js';
import type { MarketDataIntake } from './md-intake.js';
import type { ProblemBook } from './problems.js';
import { reportConflict, reportDuplicate, type CopyReports } from './seq-copies.js';
import type { MdProgress } from './session.js';
import type { AnyMsg, Decision, FeedName, Run, SessionJudge, Verdict } from './verdict.js';

export interface SessionVerdictDeps {
  clearing: Pick<ClearingFeed, 'accept' | 'acceptHeld' | 'beginNewSession' | 'counters'>;
  md: Pick<MarketDataIntake, 'apply' | 'restart' | 'counters'>;
  problems: ProblemBook;
  alert: SendAlert;
  log: Logger;
  /** Keeps held clearing messages outside the process (src/feed/held-store.ts); without it they live in memory only. */
  held?: HeldKeeper;
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
  /** Clearing runs that left their verdicts during this step: their kept copies go once the fills passed before are stored. */
  private releases: Array<{ v: Verdict; run: Run }> = [];
  /** Held runs being applied whose mark (src/feed/held-store.ts) is not known to be stored yet. */
  private marking: Promise<void>[] = [];

  constructor(
    private readonly judge: SessionJudge,
    private readonly deps: SessionVerdictDeps,
  ) {
    const held = deps.held;
    if (held) {
      judge.listener = {
        held: (v, run, msg) => held.held(v, run, msg),
        rejected: (v) => held.rejected(v),
        released: (v, run, passed) => {
          // Passes follow in this step: marked before them as a run being applied (to the session in force), released behind them.
          if (passed) this.marking.push(held.applying(v, run, false));
          this.releases.push({ v, run });
        },
      };
    }
  }

  /**
   * A verdict a stopped bridge left undecided, with the clearing run it held
   * (src/feed/held-store.ts): a standing problem again, decided by the
   * evidence heard from now on or by the operator (SessionJudge.restore).
   */
  restore(r: StoredRun, now = Date.now()): void {
    const v = this.judge.restore(r, now);
    const rejected = v.status === 'rejected';
    const detail = `${describeVerdict(v)}; kept across a bridge restart`;
    this.deps.log.warn({ verdict: v.id, held: r.msgs.length, from: r.msgs[0]?.seq, sender: r.sender }, 'held clearing messages restored: the verdict waits for the operator');
    this.deps.problems.raise({ id: v.id, kind: rejected ? 'restart_rejected' : 'verdict_pending', feed: 'clearing', detail, actions: rejected ? ['confirm', 'ack'] : ['confirm', 'reject'], count: 0 }, now);
  }

  /**
   * A run a stopped bridge was applying when it stopped: what the fill stream
   * does not hold yet (`stored`: the run's seqs stored under `session` since
   * the application began) is published now, after the session marker when
   * the run is a restart no bridge began. Applied to another session than the
   * one in force, it is not applied again: a problem for the operator.
   */
  finishApplying(r: StoredRun, session: number, stored: Set<number>, now = Date.now()): void {
    const a = r.applying!;
    const { begin, target, inForce } = finishing(a, session);
    if (!inForce) {
      const detail = `verdict ${r.verdict.id}: ${r.msgs.length} held clearing message(s) from seq ${r.msgs[0]?.seq} were being applied to session ${target} when the bridge stopped, and the session is now ${session}: not applied again (kept in ${r.subject}; check the fill stream by hand)`;
      this.deps.log.error({ verdict: r.verdict.id, target, session }, 'held run applied to another session: left for the operator');
      this.deps.problems.raise({ id: `${r.verdict.id}-unfinished`, kind: 'held_store', feed: 'clearing', detail, actions: ['ack'] }, now);
      return;
    }
    this.deps.problems.resolve(r.verdict.id);
    const missing = r.msgs.filter((m) => !stored.has(m.seq));
    this.deps.log.warn({ verdict: r.verdict.id, held: r.msgs.length, publishing: begin ? r.msgs.length : missing.length, sessionBegun: !begin }, 'finishing a held run the last bridge was applying');
    if (begin) {
      this.deps.clearing.beginNewSession(`exchange restart (verdict ${r.verdict.id}, finished after a bridge restart)`, r.msgs[0]?.seq ?? 0);
      for (const m of r.msgs) this.deps.clearing.accept(m);
    } else for (const m of missing) this.deps.clearing.acceptHeld(m);
    this.judge.appliedAtStart(a.restart, r.msgs);
    this.deps.held?.releaseStored(r.subject);
  }

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

  /** Restored verdicts and their held runs: another bridge may decide them (src/feed/ticker.ts looks). */
  restored(): Array<{ v: Verdict; run: Run }> {
    return this.judge
      .verdicts()
      .filter((v) => v.restored && v.runs.clearing)
      .map((v) => ({ v, run: v.runs.clearing! }));
  }

  /**
   * A restored verdict whose kept run another bridge purged (it was live
   * there, decided there): forgotten here, so it is never applied a second
   * time from this copy.
   */
  decidedElsewhere(id: string, from: number): void {
    if (!this.judge.discard(id, from)) return;
    this.deps.problems.resolve(id);
    this.deps.log.warn({ verdict: id }, 'a restored verdict was decided by another bridge: its copy here is dropped');
    this.deps.alert('clearing', { kind: 'verdict_decided', detail: `verdict ${id} was decided by another bridge; this bridge's restored copy is dropped`, verdict: id });
  }

  /**
   * Resolves once every held run this bridge began to apply is marked so in
   * the store: from then on a stop cannot lose or double the decision (the
   * operator's answer waits for this).
   */
  marked(): Promise<void> {
    const m = this.marking;
    this.marking = [];
    return Promise.all(m).then(() => {});
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

  /** Who sends the clearing run followed (null: not heard in this process), as saved for the next start to compare with. */
  clearingSender(): string | null {
    return this.judge.followedSender('clearing');
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
    if (this.releases.length === 0) return;
    for (const { v, run } of this.releases) this.deps.held?.release(v, run);
    this.releases = [];
  }

  private on(d: Not<'pass'>, now: number): void {
    switch (d.kind) {
      case 'conflict':
        return this.conflict(d, now);
      case 'duplicate':
        return this.duplicate(d);
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
    const v = d.heldBy;
    reportConflict(d, this.reports(d.feed), now, v ? { run: `the run of verdict ${v.id}`, applied: 'applied only if the verdict is accepted', verdict: v.id } : undefined);
  }

  private duplicate(d: Of<'duplicate'>): void {
    reportDuplicate(d, this.reports(d.feed));
  }

  private reports(feed: FeedName): CopyReports {
    const c = this.counters(feed);
    return { count: (what) => void (c[what] = (c[what] ?? 0) + 1), alert: this.deps.alert, problems: this.deps.problems, log: this.deps.log };
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
    const run = v.runs.clearing;
    // Marked before the session marker and the fills: a bridge stopped from here on finishes this, never applies it twice.
    if (run && this.deps.held) this.marking.push(this.deps.held.applying(v, run, v.kind === 'restart'));
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
    if (run) this.deps.held?.release(v, run);
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

function describeVerdict(v: Verdict): string {
  const runs = (['market_data', 'clearing'] as const)
    .filter((f) => v.runs[f])
    .map((f) => `${f} from seq ${v.runs[f]!.from} (${v.runs[f]!.count} message(s) from ${v.runs[f]!.sender}${v.runs[f]!.missed > 0 ? `, ${v.runs[f]!.missed} seq(s) between them never heard` : ''}, held)`)
    .join(', ');
  const what = v.rival ? `another sender's ${v.feed} run beside a possible exchange restart's` : v.impostor ? `another sender continuing ${v.feed}'s seq` : v.kind === 'jump' ? `far seq jump on ${v.feed}` : v.downtime ? 'possible exchange restart while no bridge listened' : 'possible exchange restart';
  const choice = v.downtime ? ' (confirm: a new exchange session, positions reset under the restart policy; reject: the old session\'s fills after a gap)' : '';
  return `${what}: ${runs}; ${v.waiting || 'waiting'}${choice}`;
}
