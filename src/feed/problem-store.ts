import type { KV } from '@nats-io/kv';
import { decode, encode } from '../../proto/codec.js';
import { FEED_PROBLEMS_KEY, feedProblemProblem, type FeedProblem } from '../../proto/feed.js';
import type { Logger } from '../shared/log.js';
import { putQuiet } from './nats-out.js';
import { ProblemBook } from './problems.js';

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
  const e = await kv.get(FEED_PROBLEMS_KEY);
  if (!e || e.operation !== 'PUT' || e.value.length === 0) return [];
  try {
    const list = decode<FeedProblem[]>(e.value);
    if (Array.isArray(list)) return list.filter((p) => feedProblemProblem(p) === null);
  } catch (err) {
    log.warn({ err: String(err) }, 'saved feed problems unreadable: starting without them');
  }
  return [];
}
