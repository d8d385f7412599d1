import type { KV, KvEntry } from '@nats-io/kv';
import { decode, encode } from '../../proto/codec.js';
import { FEED_PROBLEMS_KEY, FEED_STANDBY_PROBLEMS_KEY, feedProblemProblem, type FeedProblem } from '../../proto/feed.js';
import type { Logger } from '../shared/log.js';
import { putQuiet } from './nats-out.js';
import { ProblemBook } from './problems.js';
import { lostRace } from './session.js';

/**
 * Problems raised are written this soon (events of one burst together), not
 * at the next status tick: a bridge killed in between would forget a gap, the
 * one record that fills were lost for good.
 */
const SAVE_WITHIN_MS = 20;

/** The standing problems, kept in the feed bucket so a restarted bridge (and the gateway) still sees them. */
export class ProblemStore {
  private timer: NodeJS.Timeout | null = null;

  private constructor(
    private readonly kv: KV,
    private readonly log: Logger,
    readonly book: ProblemBook,
  ) {
    book.onEvent = () => {
      this.timer ??= setTimeout(() => {
        this.timer = null;
        this.flush();
      }, SAVE_WITHIN_MS);
      this.timer.unref();
    };
  }

  static async open(kv: KV, log: Logger): Promise<ProblemStore> {
    return new ProblemStore(kv, log, new ProblemBook(await loadProblems(kv, log)));
  }

  /** Writes the list when it changed since the last write. */
  flush(): void {
    if (!this.book.changed) return;
    this.book.changed = false;
    putQuiet(this.kv, this.log, FEED_PROBLEMS_KEY, encode(this.book.list()));
  }
}

/** The standing problems an earlier bridge left (none when the key is absent or unreadable: logged). */
async function loadProblems(kv: KV, log: Logger): Promise<FeedProblem[]> {
  return readProblems(await kv.get(FEED_PROBLEMS_KEY), log, 'saved feed problems unreadable: starting without them');
}

function readProblems(e: KvEntry | null, log: Logger, unreadable: string): FeedProblem[] {
  if (!e || e.operation !== 'PUT' || e.value.length === 0) return [];
  try {
    const list = decode<FeedProblem[]>(e.value);
    if (Array.isArray(list)) return list.filter((p) => feedProblemProblem(p) === null);
  } catch (err) {
    log.warn({ key: e.key, err: String(err) }, unreadable);
  }
  return [];
}

/** Compare-and-set tries in one write before it waits for the next: each lost one means another writer just wrote. */
const OUTBOX_TRIES = 5;

/**
 * The standby's problems (FEED_STANDBY_PROBLEMS_KEY) until a bridge takes them
 * (takeStandbyProblems): the standby has no operator of its own, and a conflict
 * only it heard must stand in the list the operator reads and acknowledges, and
 * outlive a standby restart, as the bridge's do. Written with compare-and-set:
 * the standby adds to the list, a bridge takes all of it by deleting it, and
 * neither loses what the other did.
 */
export class ProblemOutbox {
  /** Raised and not written yet, in order. */
  private queued: Array<{ p: RaisedProblem; now: number }> = [];
  /** The list as last written or read: what no bridge has taken yet. */
  private stored: FeedProblem[] = [];
  private writing: Promise<void> | null = null;

  constructor(
    private readonly kv: KV,
    private readonly log: Logger,
  ) {}

  readonly raise = (p: RaisedProblem, now: number): void => {
    this.queued.push({ p, now });
    void this.flush();
  };

  /** Not taken by a bridge yet: stored, and raised since. */
  list(): FeedProblem[] {
    const book = new ProblemBook(this.stored);
    for (const { p, now } of this.queued) book.raise(p, now);
    return book.list();
  }

  /** Writes what was raised (tried again at the next call after a failure), else reads what a bridge has left. */
  flush(): Promise<void> {
    this.writing ??= this.write()
      .catch((err: unknown) => this.log.warn({ err: String(err), queued: this.queued.length }, 'standby: could not save its problems for the bridge: tried again at the next tick'))
      .finally(() => (this.writing = null));
    return this.writing;
  }

  private async write(): Promise<void> {
    let tries = 0;
    do {
      const e = await this.kv.get(FEED_STANDBY_PROBLEMS_KEY);
      const book = new ProblemBook(readProblems(e, this.log, 'standby problems unreadable: written anew'));
      const batch = this.queued.length;
      if (batch === 0) {
        this.stored = book.list();
        return;
      }
      for (const { p, now } of this.queued.slice(0, batch)) book.raise(p, now);
      const data = encode(book.list());
      try {
        if (e) await this.kv.update(FEED_STANDBY_PROBLEMS_KEY, data, e.revision);
        else await this.kv.create(FEED_STANDBY_PROBLEMS_KEY, data);
      } catch (err) {
        if (!lostRace(err)) throw err;
        continue;
      }
      this.queued.splice(0, batch);
      this.stored = book.list();
    } while (++tries < OUTBOX_TRIES && this.queued.length > 0);
  }
}

type RaisedProblem = Parameters<ProblemBook['raise']>[0];

/**
 * A bridge takes the standby's problems (ProblemOutbox) into its own book:
 * deleted first with compare-and-set (the standby adding one meanwhile makes
 * it wait for the next look, and of two bridges one takes them), then counted
 * in. A stop between the two loses them, in the few microseconds before the
 * book's next save is queued: doubling them at every look would be worse.
 */
export async function takeStandbyProblems(kv: KV, book: ProblemBook, log: Logger): Promise<FeedProblem[]> {
  const e = await kv.get(FEED_STANDBY_PROBLEMS_KEY);
  if (!e || e.operation !== 'PUT') return [];
  const list = readProblems(e, log, 'standby problems unreadable: dropped');
  try {
    await kv.delete(FEED_STANDBY_PROBLEMS_KEY, { previousSeq: e.revision });
  } catch (err) {
    if (lostRace(err)) return [];
    throw err;
  }
  for (const p of list) book.merge(p);
  if (list.length) log.warn({ problems: list.map((p) => ({ id: p.id, count: p.count })) }, 'problems the standby raised, taken into the bridge\'s');
  return list;
}
