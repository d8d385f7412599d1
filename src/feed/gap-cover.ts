import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { FILL_STREAM } from '../../proto/subjects.js';
import type { FeedAlert, FeedCounters } from '../../proto/marketdata.js';
import type { Logger } from '../shared/log.js';
import { HeldStore } from './held-store.js';

/** Long enough for another bridge's copies of the fills in a gap to be stored (they were sent as this bridge's would have been). */
export const COVER_GRACE_MS = 1000;
/**
 * One more look for a gap not all covered at the first: the standby stores a run it kept (src/feed/standby.ts,
 * heard before this bridge listened) once it has seen this bridge go on, up to two status intervals later.
 */
export const LATE_LOOK_MS = 5000;
/**
 * How far before the highest stream seq this bridge knew the look begins:
 * another bridge's fills of a gap may be stored a little before the last one
 * this bridge had acked (two publishers, each up to this many in flight).
 */
const LOOK_BEHIND = 1024;
/** A look reads at most this many stream messages: past it (a bridge far behind under overload), the gaps stand as reported rather than load it further. */
const MAX_LOOK = 100_000;

interface Gap {
  session: string;
  expected: number;
  received: number;
  /** Stream seq after which the gap's fills can be, if any bridge stored them. */
  after: number;
  /** Seqs found stored by an earlier look (taken back already); set once looked at. */
  found?: Set<number>;
}

/**
 * A seq gap this bridge heard is not a loss when another bridge (the standby,
 * src/feed/standby.ts, or a second bridge) stored the fills it missed: the
 * bridge restarting while the standby listened, or a datagram its own socket
 * dropped. The gap is reported at once as ever (alert and standing problem,
 * saved within milliseconds: a bridge killed now still leaves the record);
 * COVER_GRACE_MS later the fill stream is read and what another bridge stored
 * is taken back out of the counters and the problem. Nothing is ever added
 * here: a failed look leaves the report as it stands.
 */
export class GapCover {
  private gaps: Gap[] = [];
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> = Promise.resolve();
  /** Looks done (each for every gap heard since the one before). */
  looks = 0;

  constructor(
    private readonly deps: {
      nc: NatsConnection;
      log: Logger;
      counters: FeedCounters;
      /** The fill-stream seq this bridge last knew (FillPublisher.streamSeq). */
      streamSeq: () => number;
      /** Takes `n` covered fills out of the gap problem (ClearingLossProblems.covered). */
      uncount: (n: number) => void;
      graceMs?: number;
      /** LATE_LOOK_MS unless set (tests). */
      lateMs?: number;
      /** MAX_LOOK unless set (tests). */
      maxLook?: number;
    },
  ) {}

  /** A gap alert just reported, in the exchange session `session` (its fill msg id session). */
  heard(a: Omit<FeedAlert, 'ts' | 'feed'>, session: string): void {
    if (a.kind !== 'gap' || a.expected === undefined || a.received === undefined || a.received <= a.expected) return;
    this.gaps.push({ session, expected: a.expected, received: a.received, after: Math.max(0, this.deps.streamSeq() - LOOK_BEHIND) });
    this.timer ??= setTimeout(() => {
      this.timer = null;
      this.running = this.running.then(() => this.look(this.take('gaps')));
    }, this.deps.graceMs ?? COVER_GRACE_MS);
  }

  /** Gaps not all covered at their first look, looked at once more. */
  private lateGaps: Gap[] = [];
  private lateTimer: NodeJS.Timeout | null = null;

  private take(which: 'gaps' | 'lateGaps'): Gap[] {
    const list = this[which];
    this[which] = [];
    return list;
  }

  /** Looks now for the gaps heard so far (a clean stop: nothing is left unlooked). */
  async flush(): Promise<void> {
    this.stop();
    this.running = this.running.then(() => this.look([...this.take('gaps'), ...this.take('lateGaps')]));
    await this.running;
  }

  private async look(gaps: Gap[]): Promise<void> {
    if (gaps.length === 0) return;
    const bySession = new Map<string, Gap[]>();
    for (const g of gaps) {
      const list = bySession.get(g.session);
      if (list) list.push(g);
      else bySession.set(g.session, [g]);
    }
    for (const [session, list] of bySession) {
      let stored: Set<number>;
      try {
        const after = Math.min(...list.map((g) => g.after));
        const last = (await (await jetstreamManager(this.deps.nc)).streams.info(FILL_STREAM)).state.last_seq;
        if (last - after > (this.deps.maxLook ?? MAX_LOOK)) {
          this.deps.log.warn({ gaps: list.length, messages: last - after }, 'too much of the fill stream to read for fills of a gap another bridge stored: the gaps stand as reported');
          continue;
        }
        stored = await HeldStore.storedSeqs(this.deps.nc, after, session);
      } catch (err) {
        this.deps.log.warn({ err: String(err), gaps: list.length }, 'could not read the fill stream for fills of a gap another bridge stored: the gaps stand as reported');
        continue;
      }
      for (const g of list) {
        const first = !g.found;
        const seen = (g.found ??= new Set());
        let found = 0;
        for (let seq = g.expected; seq < g.received; seq++) {
          if (!stored.has(seq) || seen.has(seq)) continue;
          seen.add(seq);
          found++;
        }
        const all = seen.size === g.received - g.expected;
        if (!all && first) this.lookLater(g);
        if (found === 0) continue;
        const c = this.deps.counters;
        c.missed_messages = Math.max(0, c.missed_messages - found);
        if (all) c.gaps = Math.max(0, c.gaps - 1);
        c.covered = (c.covered ?? 0) + found;
        this.deps.uncount(found);
        this.deps.log.info({ expected: g.expected, received: g.received, found }, 'fills of a clearing gap were stored by another bridge: not lost');
      }
    }
    this.looks++;
  }

  private lookLater(g: Gap): void {
    this.lateGaps.push(g);
    this.lateTimer ??= setTimeout(() => {
      this.lateTimer = null;
      this.running = this.running.then(() => this.look(this.take('lateGaps')));
    }, this.deps.lateMs ?? LATE_LOOK_MS).unref();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.lateTimer) clearTimeout(this.lateTimer);
    this.lateTimer = null;
  }
}
