import type { NatsConnection } from '@nats-io/transport-node';
import { BBO_BUCKET, FEED_ALERT_SUBJECT, type FeedCounters, type FeedStatus } from '../../proto/marketdata.js';
import { FEED_BUCKET, fillSessionId } from '../../proto/feed.js';
import { HELD_STREAM } from '../../proto/subjects.js';
import { connectNats } from '../shared/nats.js';
import { ensureFillStream, openBucket } from '../shared/streams.js';
import type { Logger } from '../shared/log.js';
import type { BridgeConfig } from '../config/feed.js';
import { AlertSender } from './alerts.js';
import { BboOut } from './bbo-out.js';
import { ClearingFeed } from './clearing.js';
import { ClearingSession } from './clearing-session.js';
import { ControlChannel, answerControl } from './control.js';
import type { MarketData } from './marketdata.js';
import { MarketDataIntake } from './md-intake.js';
import { publishQuiet } from './nats-out.js';
import { ProblemStore } from './problem-store.js';
import { ClearingLossProblems } from './problems.js';
import { FillPublisher, type PublisherStats } from './publisher.js';
import { GapCover } from './gap-cover.js';
import { HeldStore, finishing } from './held-store.js';
import { SessionVerdict } from './session-verdict.js';
import { FeedSockets, type FeedInputs } from './sockets.js';
import { beginsSession } from './session.js';
import { StartGate } from './start-gate.js';
import { BridgeTicker } from './ticker.js';
import { DEFAULT_JUDGE, SessionJudge } from './verdict.js';

export type BridgeOptions = Pick<BridgeConfig, 'natsUrl' | 'clearing' | 'marketData' | 'snapshot' | 'iface' | 'sessionName' | 'restartPolicy'> &
  Partial<Pick<BridgeConfig, 'sources'>> &
  Partial<Pick<BridgeConfig, 'statusIntervalMs' | 'maxInFlight' | 'verdictWindowMs'>> & {
    /** NATS credentials file; absent: none. */
    natsCreds?: string;
    /** Copies of a stream or bucket it creates (default 1). */
    natsReplicas?: number;
    /** A fill publish unanswered this long is re-sent (same msg id). Default 5000. */
    ackTimeoutMs?: number;
  };

export interface BridgeStats {
  status: FeedStatus;
  publisher: PublisherStats;
  session: number;
  invalidFills: number;
  md: MarketData['stats'];
  alerts: number;
  /** Looks for fills of heard gaps that another bridge stored (src/feed/gap-cover.ts). */
  gapLooks: number;
}

export interface BridgeHandle {
  clearing: ClearingFeed;
  marketData: MarketData;
  publisher: FillPublisher;
  stats(): BridgeStats;
  /** Resolves once every fill received so far is acked by JetStream. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The feed bridge: NDFEX multicast in, NATS out. Fills go to the JetStream
 * fill stream (de-duplicated by session + seq), top of book to NATS subjects
 * and the BBO KV bucket, alerts and a periodic status to NATS.
 *
 * Its parts, each with one job: the sockets (FeedSockets) take datagrams in;
 * the clearing feed and market-data intake decode them; the session verdict
 * (SessionVerdict over SessionJudge) decides which to apply; the publishers
 * (FillPublisher, BboOut, AlertSender) send; the problems (ProblemStore) and
 * the session (ClearingSession) are kept in the feed bucket; the operator's
 * requests come in on ControlChannel; BridgeTicker does the periodic work.
 */
export async function startBridge(opts: BridgeOptions, log: Logger): Promise<BridgeHandle> {
  const nc = await connectNats(opts.natsUrl, 'ndfex-feed', { role: 'feed', credsFile: opts.natsCreds, log });
  const alerts = new AlertSender((a) => publishQuiet(nc, log, FEED_ALERT_SUBJECT, a));
  const sockets = new FeedSockets(opts, alerts.send);
  try {
    // A start that begins the operator's new session joins before the session is opened, and keeps what comes
    // meanwhile for the parts: its marker goes into the stream before any of its fills, and a fill the exchange
    // sends after the marker must reach this bridge (the standby's copy under the old session, stored after the
    // marker, is not applied). Otherwise the standby's copies count, and the bridge joins once it can judge.
    const feedKv = await openBucket(nc, FEED_BUCKET, opts.natsReplicas);
    const early = (await beginsSession(feedKv, opts.sessionName)) ? new EarlyDatagrams() : null;
    if (early) await sockets.start(early.inputs);
    const parts = await openParts(nc, feedKv, { ...opts, joinedEarly: early !== null }, log, alerts);
    const { clearing, md, verdict, gate } = parts;
    gate.start();
    const inputs: FeedInputs = {
      clearing: { on: (buf, sender) => clearing.onDatagram(buf, sender), counters: clearing.counters },
      marketData: {
        on: (buf, sender) => {
          const msgs = md.decodeLive(buf);
          verdict.observeMarketData(msgs, sender);
          // The first market data after a start has told whether the exchange restarted while no bridge listened.
          if (msgs.length > 0) gate.open();
        },
        counters: md.counters,
      },
      snapshot: { on: (buf) => md.onSnapshot(buf), counters: { foreign: 0 } as FeedCounters },
    };
    if (early) {
      early.deliver(inputs);
      if (early.dropped > 0) log.warn({ dropped: early.dropped, kept: EarlyDatagrams.MAX }, 'datagrams heard while the bridge started, beyond what it keeps: not handled (a gap shows the clearing ones)');
    } else await sockets.start(inputs);
    const ticker = new BridgeTicker(nc, parts.feedKv, log, parts, opts.statusIntervalMs ?? 1000);
    const control = new ControlChannel(nc, log, (data) => answerControl(data, verdict, parts.problems.book, log), ticker.tick, () => verdict.marked());
    control.start();
    // Ready means the operator's decisions are heard: the server has the subscription.
    await nc.flush();
    ticker.start();
    log.info({ clearing: opts.clearing, marketData: opts.marketData, snapshot: opts.snapshot, iface: opts.iface }, 'feed bridge ready');
    return bridgeHandle(nc, parts, { alerts, sockets, ticker, control });
  } catch (err) {
    await sockets.stop();
    // The start's own error (thrown below) is the one to report, not a close of a connection that may be gone.
    await nc.close().catch(() => {});
    throw err;
  }
}

/**
 * The sockets' inputs before the bridge's parts exist: datagrams are kept in
 * arrival order, and handed to the parts, in that order, once they are
 * built (a start's few NATS round trips: a bounded number of datagrams).
 */
class EarlyDatagrams {
  /** Datagrams kept at most: a start held up by NATS for long at a stress rate does not grow memory without end (the rest are counted). */
  static readonly MAX = 262_144;
  dropped = 0;
  private kept: Array<[feed: keyof FeedInputs, buf: Buffer, sender: string]> = [];
  private live: FeedInputs | null = null;
  private readonly foreign: Record<keyof FeedInputs, FeedCounters> = {
    clearing: { foreign: 0 } as FeedCounters,
    marketData: { foreign: 0 } as FeedCounters,
    snapshot: { foreign: 0 } as FeedCounters,
  };
  readonly inputs: FeedInputs = { clearing: this.relay('clearing'), marketData: this.relay('marketData'), snapshot: this.relay('snapshot') };

  private relay(feed: keyof FeedInputs): FeedInputs[keyof FeedInputs] {
    const self = this;
    return {
      on: (buf, sender) => {
        if (self.live) self.live[feed].on(buf, sender);
        else if (self.kept.length < EarlyDatagrams.MAX) self.kept.push([feed, buf, sender]);
        else self.dropped++;
      },
      // Datagrams from a sender NDFEX_SOURCE does not allow are counted where the parts count them, once they exist.
      get counters() {
        return self.live ? self.live[feed].counters : self.foreign[feed];
      },
    };
  }

  deliver(live: FeedInputs): void {
    for (const feed of Object.keys(this.foreign) as (keyof FeedInputs)[]) {
      const n = this.foreign[feed].foreign ?? 0;
      if (n > 0) live[feed].counters.foreign = (live[feed].counters.foreign ?? 0) + n;
    }
    this.live = live;
    const kept = this.kept;
    this.kept = [];
    for (const [feed, buf, sender] of kept) live[feed].on(buf, sender);
  }
}

interface BridgeParts {
  feedKv: Awaited<ReturnType<typeof openBucket>>;
  session: ClearingSession;
  publisher: FillPublisher;
  problems: ProblemStore;
  clearing: ClearingFeed;
  md: MarketDataIntake;
  verdict: SessionVerdict;
  gate: StartGate;
  bbos: BboOut;
  held: HeldStore;
  cover: GapCover;
}

/** The standing problem while held fills cannot be kept outside the bridge. */
const HELD_STORE_PROBLEM = 'held-store';

/** Opens what the bridge keeps in NATS and builds the parts between the sockets and the publishers. */
async function openParts(nc: NatsConnection, feedKv: BridgeParts['feedKv'], opts: BridgeOptions & { joinedEarly: boolean }, log: Logger, alerts: AlertSender): Promise<BridgeParts> {
  await ensureFillStream(nc, opts.natsReplicas);
  const bbos = new BboOut(nc, await openBucket(nc, BBO_BUCKET, opts.natsReplicas), log);
  const session = await ClearingSession.open(nc, feedKv, opts, log, (detail) => alerts.send('clearing', { kind: 'session_change', detail }));
  const publisher = new FillPublisher(nc, log, fillSessionId(session.number), opts.maxInFlight ?? 512, opts.ackTimeoutMs ?? 5000);
  // Where a look for a gap's fills begins until an ack says more.
  publisher.streamSeq = session.streamSeqAtOpen;
  if (session.countedBefore.size > 0) publisher.counted = { session: fillSessionId(session.number), seqs: session.countedBefore };
  const problems = await ProblemStore.open(feedKv, log);
  if (session.markerUnreadable !== null) {
    // Until the operator has looked: which session the stream's positions are in, and whether they were reset, is in doubt.
    problems.book.raise({ id: 'marker-unreadable', kind: 'marker_unreadable', feed: 'clearing', detail: session.markerUnreadable, actions: ['ack'] }, Date.now());
    alerts.send('clearing', { kind: 'marker_unreadable', detail: session.markerUnreadable });
  }
  const heldTrouble = (why: string | null) => {
    if (why === null) return problems.book.resolve(HELD_STORE_PROBLEM);
    problems.book.raise({ id: HELD_STORE_PROBLEM, kind: 'held_store', feed: 'clearing', detail: why, actions: ['ack'] }, Date.now());
    alerts.send('clearing', { kind: 'held_store', detail: why });
  };
  const { store: held, runs: heldRuns, replaced, unreadable } = await HeldStore.open(nc, log, (what, run) => publisher.enqueueBarrier(what, run), () => session.number, heldTrouble, opts.natsReplicas);
  if (unreadable > 0) {
    const detail = `${unreadable} entr${unreadable === 1 ? 'y' : 'ies'} of ${HELD_STREAM} could not be read at this start: held fills in them are not restored (look at the stream by hand)`;
    problems.book.raise({ id: 'held-unreadable', kind: 'held_store', feed: 'clearing', detail, actions: ['ack'] }, Date.now());
  }
  for (const subject of replaced) held.releaseStored(subject);
  const losses = new ClearingLossProblems(problems.book);
  const savedMd = session.savedMarketData;
  const judge = new SessionJudge(
    { windowMs: opts.verdictWindowMs ?? DEFAULT_JUDGE.windowMs, minMessages: DEFAULT_JUDGE.minMessages },
    { clearing: { seq: session.startSeq, sender: session.savedClearingSender }, ...(savedMd ? { market_data: savedMd } : {}), at: session.savedAt },
  );
  const md = new MarketDataIntake({ alert: alerts.send, bbos: bbos.publish, log });
  const clearing = new ClearingFeed(
    {
      publisher,
      log,
      alert: (a) => {
        losses.onAlert(a, session.number, Date.now());
        alerts.send('clearing', a);
        cover.heard(a, publisher.session);
      },
      beginSession: async (detail, seq) => {
        publisher.session = fillSessionId(await session.begin(detail, seq));
      },
      route: (m, sender) => verdict.observeClearing(m, sender),
    },
    session.startSeq,
  );
  const cover = new GapCover({ nc, log, counters: clearing.tracker.counters, streamSeq: () => publisher.streamSeq, uncount: (n) => losses.covered(n) });
  const verdict = new SessionVerdict(judge, { clearing, md, problems: problems.book, alert: alerts.send, log, held });
  await restoreHeld(nc, heldRuns, verdict, session.number);
  return { feedKv, session, publisher, problems, clearing, md, verdict, gate: new StartGate(clearing, savedMd !== undefined), bbos, held, cover };
}

/**
 * What earlier bridges held when they stopped (src/feed/held-store.ts): a run
 * being applied is finished (publishing only the fills the stream lacks), any
 * other waits again for the operator's verdict.
 */
async function restoreHeld(nc: NatsConnection, runs: Awaited<ReturnType<typeof HeldStore.open>>['runs'], verdict: SessionVerdict, session: number): Promise<void> {
  for (const r of runs) {
    const a = r.applying;
    if (!a) {
      verdict.restore(r);
      continue;
    }
    const { begin, target, inForce } = finishing(a, session);
    const stored = !begin && inForce ? await HeldStore.storedSeqs(nc, a.after_stream_seq, fillSessionId(target)) : new Set<number>();
    verdict.finishApplying(r, session, stored);
  }
}

function bridgeHandle(nc: NatsConnection, parts: BridgeParts, run: { alerts: AlertSender; sockets: FeedSockets; ticker: BridgeTicker; control: ControlChannel }): BridgeHandle {
  const { publisher, clearing, md, session } = parts;
  let closed = false;
  return {
    clearing,
    marketData: md.books,
    publisher,
    stats: () => ({ status: run.ticker.status(), publisher: { ...publisher.stats }, session: session.number, invalidFills: clearing.invalidFills, md: { ...md.books.stats }, alerts: run.alerts.sent, gapLooks: parts.cover.looks }),
    idle: () => publisher.idle(),
    close: async () => {
      if (closed) return;
      closed = true;
      run.ticker.stop();
      await run.sockets.stop();
      // Give in-flight fills a bounded chance to be acked before giving up on them.
      await Promise.race([publisher.idle(), new Promise((r) => setTimeout(r, 5000).unref())]);
      await Promise.race([parts.held.settle(), new Promise((r) => setTimeout(r, 5000).unref())]);
      // Gaps heard in the last second: looked for now, so the saved problems say what was lost.
      await Promise.race([parts.cover.flush(), new Promise((r) => setTimeout(r, 3000).unref())]);
      parts.cover.stop();
      publisher.close();
      parts.held.close();
      await parts.bbos.stop();
      parts.gate.stop();
      run.control.stop();
      if (clearing.restartsPending === 0) await session.save(clearing.tracker.last, parts.verdict.mdProgress(md.progress), parts.verdict.clearingSender());
      run.ticker.tick();
      await nc.drain();
    },
  };
}
