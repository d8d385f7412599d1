import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { Kvm, type KV } from '@nats-io/kv';
import { watchBucket } from '../shared/kv-watch.js';
import { decode, encode } from '../../proto/codec.js';
import { DESK_STREAM } from '../../proto/subjects.js';
import { BASKET_BUCKET, BBO_BUCKET, BBO_SUBJECT_WILDCARD, PRICE_BUCKET, basketVersionsShape, priceSubject, type BasketVersions, type Bbo, type EtfPrice } from '../../proto/marketdata.js';
import type { Config } from '../config/config.js';
import { loadBaskets } from '../config/baskets.js';
import { connectNats } from '../shared/nats.js';
import { describeError, isStreamNotFound } from '../shared/js-errors.js';
import { isTransientJsError, retryTransient } from '../shared/js-retry.js';
import { ensureDeskStream, openBucket } from '../shared/streams.js';
import { LatestPerKey } from '../shared/latest-kv.js';
import type { Logger } from '../shared/log.js';
import { BadBbos, PricingState, Throttle, bboProblem, bboUnusable, priceChanged } from './core.js';
import { DeskRecorder } from './desk.js';
import { StatusReporter } from './status.js';

/** No ETF's price goes out more often than this. */
export const PRICE_INTERVAL_MS = 100;

export interface PricingStats {
  bbos: number;
  badBbos: number;
  published: number;
  publishErrors: number;
}

export interface PricingHandle {
  nc: NatsConnection;
  readonly state: PricingState;
  /** The chart samples and scorecards it writes (src/pricing/desk.ts). */
  readonly desk: DeskRecorder;
  stats(): PricingStats;
  close(): Promise<void>;
}

/**
 * Prices out: each ETF whose book changed is priced and published (KV first,
 * then the subject), at most every PRICE_INTERVAL_MS; a change inside the
 * interval is published when it ends, and an unchanged price not at all.
 */
class PricePublisher {
  private readonly throttle = new Throttle(PRICE_INTERVAL_MS);
  private readonly lastSent = new Map<string, EtfPrice>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private closed = false;

  constructor(
    private readonly state: PricingState,
    private readonly store: LatestPerKey,
    private readonly stats: PricingStats,
  ) {}

  changed(etfs: readonly string[]): void {
    if (this.closed) return;
    for (const etf of etfs) {
      const r = this.throttle.request(etf, Date.now());
      if (r === 'now') this.publish(etf);
      else if (r !== 'pending') {
        this.timers.set(
          etf,
          setTimeout(() => {
            this.timers.delete(etf);
            this.publish(etf);
          }, r.delayMs),
        );
      }
    }
  }

  /** At once, outside the throttle (a basket change). */
  publish(etf: string): void {
    if (this.closed) return;
    const now = Date.now();
    const price = this.state.price(etf, now);
    if (!priceChanged(this.lastSent.get(etf), price)) {
      this.throttle.skipped(etf);
      return;
    }
    this.throttle.published(etf, now);
    this.lastSent.set(etf, price);
    this.stats.published++;
    this.store.put(etf, encode(price));
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t);
  }
}

/** The symbol a Bbo's subject (`ndfex.md.bbo.<id>`) or bucket key (`ndfex_bbo/<id>`) names: a bad payload's own symbol cannot be trusted. */
function symbolIn(origin: string): number | null {
  const id = /[./](\d{1,10})$/.exec(origin)?.[1];
  return id !== undefined && Number(id) <= 0xffffffff ? Number(id) : null;
}

/**
 * A Bbo from the bus or the bucket, checked: a bad one (not of the Bbo shape,
 * or unusable) is counted into its symbol's streak and null. Logged when a
 * streak starts and when it ends, not each time: a symbol whose books come
 * bad several times a second would fill the log.
 */
function bboReader(stats: PricingStats, streaks: BadBbos, log: Logger): (data: Uint8Array, origin: string) => Bbo | null {
  return (data, origin) => {
    let v: unknown;
    try {
      v = decode(data);
    } catch {
      v = undefined;
    }
    const problem = v === undefined ? 'not msgpack' : (bboProblem(v) ?? bboUnusable(v as Bbo));
    if (problem) {
      stats.badBbos++;
      const symbol = symbolIn(origin);
      if (symbol === null || streaks.bad(symbol, problem, Date.now())) log.warn({ origin, problem }, 'ignoring a bad Bbo: its symbol keeps its last good quote until a good one comes');
      return null;
    }
    const bbo = v as Bbo;
    const ended = streaks.good(bbo.symbol);
    if (ended) log.info({ origin, bad: ended.count, ms: Date.now() - ended.since }, 'a good Bbo again after bad ones');
    return bbo;
  };
}

/**
 * The books as the bridge last stored them (BBO_BUCKET); returns how many were
 * read. No bucket (JetStream's own answer) means the bridge has not run; any
 * other failure is said as such. Either way live updates fill the books.
 */
export async function seedBooks(nc: NatsConnection, read: ReturnType<typeof bboReader>, seed: (bbo: Bbo) => void, log: Logger): Promise<number> {
  let seeded = 0;
  try {
    const bboKv = await new Kvm(nc).open(BBO_BUCKET);
    for await (const key of await bboKv.keys()) {
      const e = await bboKv.get(key);
      if (!e || e.operation !== 'PUT') continue;
      const bbo = read(e.value, `${BBO_BUCKET}/${key}`);
      if (bbo) {
        seeded++;
        seed(bbo);
      }
    }
  } catch (err) {
    if (isStreamNotFound(err)) log.info(`no ${BBO_BUCKET} bucket to start from`);
    else log.warn({ err: describeError(err), seeded }, `cannot read the ${BBO_BUCKET} bucket: books start from live updates`);
  }
  return seeded;
}

/** A symbol whose Bbos have all been bad this long is reported: a book rebuilt, or a bad quote replaced, takes less. */
export const BAD_BBOS_AFTER_MS = 3_000;
/** Bad symbols a status lists at most: enough to name the trouble, bounded in size. */
const BAD_SYMBOLS_LISTED = 20;

/** How long a start waits for JetStream to answer (a cluster electing its leaders, a server coming up) before it fails, and the process is started again. */
const STARTUP_JS_MS = 60_000;

/**
 * The pricing actor's I/O edge: best bids/asks in from the feed bridge, ETF
 * prices out on `etf.price.<ETF>` and in the PRICE_BUCKET KV, each ETF at
 * most every PRICE_INTERVAL_MS.
 */
export async function startPricing(cfg: Config, natsUrl: string, log: Logger): Promise<PricingHandle> {
  const started = Date.now();
  const instruments = loadBaskets(cfg.basketsFile || undefined);
  const state = new PricingState(instruments.baskets);
  const stats: PricingStats = { bbos: 0, badBbos: 0, published: 0, publishErrors: 0 };
  const streaks = new BadBbos();
  const badAfterMs = cfg.pricingBadBboMs ?? BAD_BBOS_AFTER_MS;
  const nc = await connectNats(natsUrl, 'etf-pricing', { role: 'pricing', credsFile: cfg.nats.creds, log });
  // Opened as the start goes: a status goes out before any of them, so a slow start is heard as one.
  let store: LatestPerKey | undefined;
  let desk: DeskRecorder | undefined;
  const reporter = new StatusReporter(
    nc,
    {
      counters: () => ({
        bbos: stats.bbos,
        bad_bbos: stats.badBbos,
        published: stats.published,
        stored: store?.stats.stored ?? 0,
        publish_errors: store?.stats.failed ?? 0,
        desk: { samples: desk?.stats.samples ?? 0, cards: desk?.stats.cards ?? 0, write_errors: desk?.stats.writeErrors ?? 0, missed: desk?.stats.missed ?? 0 },
      }),
      outputs: () => ({ ...(store ? { prices: store } : {}), ...(desk ? { desk } : {}) }),
      badSymbols: (now) =>
        streaks.standing(now, badAfterMs, BAD_SYMBOLS_LISTED).map((s) => ({
          symbol: s.symbol,
          ticker: instruments.tickerOf(s.symbol),
          etfs: [...state.etfsOf(s.symbol)],
          count: s.count,
          problem: s.problem,
          since: s.since,
          for_ms: now - s.since,
        })),
    },
    log,
    started,
  );
  reporter.start();
  // JetStream not answering yet is waited for, as the engine does at its start, and said in the status meanwhile.
  const startup = <T>(step: string, f: () => Promise<T>): Promise<T> => {
    reporter.step(step);
    const attempt = async () => {
      try {
        return await f();
      } catch (err) {
        if (isTransientJsError(err)) reporter.waiting(describeError(err));
        throw err;
      }
    };
    return retryTransient(step, attempt, { deadlineMs: STARTUP_JS_MS, log });
  };

  let publisher: PricePublisher | undefined;
  let sub: Subscription | undefined;
  let basketChanges: { close(): void } | undefined;
  let seeded: number;
  try {
    // The pricing actor writes this bucket, so it creates it; readers only open it.
    const prices: KV = await startup(`opening the ${PRICE_BUCKET} bucket`, () => openBucket(nc, PRICE_BUCKET, cfg.nats.replicas ?? 1));
    // KV first: whoever hears the subject and then reads the bucket finds this value or a newer one.
    const out = (store = new LatestPerKey(prices, log, (etf, payload) => nc.publish(priceSubject(etf), payload)));
    const pub = (publisher = new PricePublisher(state, out, stats));
    const readBbo = bboReader(stats, streaks, log);

    // Live updates first, so nothing published while the bucket is read is missed.
    sub = nc.subscribe(BBO_SUBJECT_WILDCARD, {
      callback: (err, msg) => {
        if (err) return log.warn({ err: err.message }, 'bbo subscription error');
        stats.bbos++;
        const bbo = readBbo(msg.data, msg.subject);
        if (bbo) pub.changed(state.apply(bbo));
      },
    });
    // Priced once every stored book is in: a price from the first few books read would be published, and be wrong.
    reporter.step(`reading the stored books (the ${BBO_BUCKET} bucket)`);
    const seededEtfs = new Set<string>();
    seeded = await seedBooks(nc, readBbo, (bbo) => state.seed(bbo).forEach((etf) => seededEtfs.add(etf)), log);
    pub.changed([...seededEtfs]);
    // Basket changes the engine published: reprice with the version in force.
    basketChanges = watchBucket(nc, BASKET_BUCKET, log, basketVersionsShape, (etf, v) => {
      if (!instruments.baskets.has(etf) || !v || !Array.isArray(v.versions)) return;
      state.setVersions(etf, v.versions);
      pub.publish(etf);
    });
    // The desk's one writer: prices and books are this service's already, and there is one of it per system.
    await startup(`opening the ${DESK_STREAM} stream`, () => ensureDeskStream(nc, cfg.nats.replicas ?? 1));
    reporter.step('taking up the chart history from the desk stream');
    desk = await DeskRecorder.start(nc, instruments, log, { sampleMs: cfg.chartSampleMs, shards: cfg.engine?.shards ?? 1, replicas: cfg.nats.replicas ?? 1 });
  } catch (err) {
    // A failed start leaves nothing running: its last status says where it was, and the silence after it that it is gone.
    reporter.stop();
    publisher?.close();
    basketChanges?.close();
    store?.close();
    await nc.close();
    throw err;
  }
  reporter.ready();
  log.info({ etfs: [...instruments.baskets.keys()], seeded }, 'pricing ready');

  const running = { store, desk, publisher, sub, basketChanges };
  let closed = false;
  return {
    nc,
    state,
    desk: running.desk,
    stats: () => ({ ...stats, publishErrors: running.store.stats.failed }),
    close: async () => {
      if (closed) return;
      closed = true;
      reporter.stop();
      running.publisher.close();
      await running.desk.close();
      running.basketChanges.close();
      running.sub.unsubscribe();
      await Promise.race([running.store.flushed(), new Promise((r) => setTimeout(r, 2000).unref())]);
      running.store.close();
      await nc.drain();
    },
  };
}
