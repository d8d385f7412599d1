import type { NatsConnection } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import { encode } from '../../proto/codec.js';
import { FEED_STATUS_KEY } from '../../proto/feed.js';
import { FEED_STATUS_SUBJECT, type FeedStatus } from '../../proto/marketdata.js';
import type { Logger } from '../shared/log.js';
import type { ClearingFeed } from './clearing.js';
import type { ClearingSession } from './clearing-session.js';
import type { HeldStore } from './held-store.js';
import type { MarketDataIntake } from './md-intake.js';
import type { FillPublisher } from './publisher.js';
import { publishQuiet, putQuiet } from './nats-out.js';
import { takeStandbyProblems, type ProblemStore } from './problem-store.js';
import type { SessionVerdict } from './session-verdict.js';

export interface TickerParts {
  verdict: SessionVerdict;
  problems: ProblemStore;
  clearing: ClearingFeed;
  md: MarketDataIntake;
  session: ClearingSession;
  held: Pick<HeldStore, 'gone'>;
  publisher: Pick<FillPublisher, 'unstored'>;
}

const PROGRESS_PROBLEM = 'progress-unsaved';

/**
 * The bridge's periodic work: pending verdicts see time pass (a restart is
 * believed on a quiet old session, which no message reports), the problems
 * and FeedStatus go out, and the clearing progress is saved.
 */
export class BridgeTicker {
  private timer: NodeJS.Timeout | undefined;
  private looking = false;
  private taking = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly log: Logger,
    private readonly parts: TickerParts,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    this.timer = setInterval(this.tick, this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  status(): FeedStatus {
    const { clearing, md, verdict, problems, publisher, session } = this.parts;
    const unstored = publisher.unstored();
    const unsaved = session.unsaved();
    return {
      clearing: { ...clearing.counters, held: verdict.held('clearing') },
      market_data: { ...md.counters, held: verdict.held('market_data') },
      problems: problems.book.list(),
      ...(unstored ? { unstored } : {}),
      ...(unsaved ? { progress_unsaved: unsaved } : {}),
      ts: Date.now(),
    };
  }

  readonly tick = (): void => {
    const { clearing, md, verdict, problems, session } = this.parts;
    verdict.tick(Date.now());
    this.lookAtRestored();
    this.takeStandbyProblems();
    this.progressProblem();
    problems.flush();
    const data = encode(this.status());
    publishQuiet(this.nc, this.log, FEED_STATUS_SUBJECT, undefined, data);
    putQuiet(this.kv, this.log, FEED_STATUS_KEY, data);
    // While a new session is not begun yet, the tracker's seq belongs to a session the store does not know.
    if (clearing.restartsPending === 0) session.saveIfMoved(clearing.tracker.last, verdict.mdProgress(md.progress), verdict.clearingSender());
  };

  /**
   * Unsaved progress as a standing problem: the gateway shows the bridge's problems on /health (a status field alone
   * it would drop), so this is what reaches the operator. It goes by itself once a save goes through; one an earlier
   * bridge process left goes at this one's first tick if its saves go through.
   */
  private progressProblem(): void {
    const { problems, session } = this.parts;
    const u = session.unsaved();
    if (!u) return problems.book.resolve(PROGRESS_PROBLEM);
    const detail = `the clearing session record (how far the bridge got, the session's sender) has not been saved for ${Math.round(u.for_ms / 1000)} s, ${u.attempts} attempt(s): ${u.last_error}. The standby follows that record (a new session's sender, a seq to go on past), and a restart resumes from it; tried again every tick`;
    if (problems.book.get(PROGRESS_PROBLEM)) problems.book.describe(PROGRESS_PROBLEM, detail);
    else problems.book.raise({ id: PROGRESS_PROBLEM, kind: 'progress_unsaved', feed: 'clearing', detail, actions: ['ack'] }, Date.now());
  }

  /** The standby's problems (a conflict only it heard) join the bridge's, where the operator reads and acknowledges them. */
  private takeStandbyProblems(): void {
    if (this.taking) return;
    this.taking = true;
    void takeStandbyProblems(this.kv, this.parts.problems.book, this.log)
      .catch((err: unknown) => this.log.warn({ err: String(err) }, 'could not take the standby\'s problems: tried again at the next tick'))
      .finally(() => (this.taking = false));
  }

  /** A restored verdict may be live in a second bridge, which decides it and purges its run: then this copy goes. */
  private lookAtRestored(): void {
    const { verdict, held } = this.parts;
    const list = verdict.restored();
    if (this.looking || list.length === 0) return;
    this.looking = true;
    void (async () => {
      for (const { v, run } of list) if (await held.gone(v, run)) verdict.decidedElsewhere(v.id, run.from);
    })()
      .catch((err: unknown) => this.log.warn({ err: String(err) }, 'could not look at restored verdicts'))
      .finally(() => (this.looking = false));
  }
}
