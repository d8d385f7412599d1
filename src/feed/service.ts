import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { encode } from '../../proto/codec.js';
import { decodeMdDatagram, type MdMessage } from '../../proto/ndfex.js';
import type { SessionMarker } from '../../proto/fill.js';
import { FILL_STREAM, SESSION_SUBJECT, fillMsgId } from '../../proto/subjects.js';
import { BBO_BUCKET, FEED_ALERT_SUBJECT, FEED_STATUS_SUBJECT, bboSubject, type Bbo, type FeedAlert, type FeedCounters, type FeedStatus } from '../../proto/marketdata.js';
import { FEED_BUCKET, FEED_STATUS_KEY, fillSessionId, sessionMarkerMsgId } from '../../proto/feed.js';
import { connectNats } from '../shared/nats.js';
import { LatestPerKey } from '../shared/latest-kv.js';
import { ensureFillStream, openBucket } from '../shared/streams.js';
import type { Logger } from '../shared/log.js';
import type { BridgeConfig } from './config.js';
import { AlertThrottle } from './alerts.js';
import { ClearingFeed } from './clearing.js';
import { MarketData } from './marketdata.js';
import { RunGuard } from './integrity.js';
import { joinGroup, type Receiver } from './multicast.js';
import { FillPublisher, type PublisherStats } from './publisher.js';
import { SessionStore } from './session.js';

export type BridgeOptions = Pick<BridgeConfig, 'natsUrl' | 'clearing' | 'marketData' | 'snapshot' | 'iface' | 'sessionName' | 'restartPolicy'> &
  Partial<Pick<BridgeConfig, 'sources'>> &
  Partial<Pick<BridgeConfig, 'statusIntervalMs' | 'maxInFlight'>> & {
    /** NATS credentials file; default NATS_CREDS. */
    natsCreds?: string;
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
 */
export async function startBridge(opts: BridgeOptions, log: Logger): Promise<BridgeHandle> {
  const nc = await connectNats(opts.natsUrl, 'ndfex-feed', { role: 'feed', credsFile: opts.natsCreds });
  const receivers: Receiver[] = [];
  let timer: NodeJS.Timeout | undefined;
  try {
    await ensureFillStream(nc);
    const js = jetstream(nc);
    const feedKv = await openBucket(nc, FEED_BUCKET);
    const bboKv = await openBucket(nc, BBO_BUCKET);

    let alerts = 0;
    const throttle = new AlertThrottle();
    const alert = (feed: FeedAlert['feed'], a: Omit<FeedAlert, 'ts' | 'feed'>) => {
      const now = Date.now();
      const { send, suppressed } = throttle.admit(`${feed}/${a.kind}`, now);
      if (!send) return;
      alerts++;
      const detail = suppressed > 0 ? `${a.detail} (${suppressed} earlier ${a.kind} alerts not sent: rate limit)` : a.detail;
      publishQuiet(nc, log, FEED_ALERT_SUBJECT, { ...a, detail, feed, ts: now } satisfies FeedAlert);
    };

    const publishMarker = async (n: number, detail: string) => {
      const marker: SessionMarker = { v: 1, kind: 'exchange_restart', reset: opts.restartPolicy === 'reset', session: n, detail, ts: Date.now() };
      await js.publish(SESSION_SUBJECT, encode(marker), { msgID: sessionMarkerMsgId(n) });
      log.warn({ session: n, reset: marker.reset, detail }, 'session marker published');
    };

    const { store: sessions, changed } = await SessionStore.open(feedKv, opts.sessionName);
    if (changed) {
      // Before any fill of the new session can be published.
      const detail = `operator session changed to "${opts.sessionName}"`;
      await publishMarker(sessions.session, detail);
      alert('clearing', { kind: 'session_change', detail });
    }
    // The saved progress is written about once a second; what JetStream stored is the truth after a crash.
    const storedSeq = await lastStoredFillSeq(nc, fillSessionId(sessions.session));
    const startSeq = Math.max(sessions.record.last_seq, storedSeq);
    log.info({ session: sessions.session, sessionName: sessions.record.name, lastSeq: startSeq, policy: opts.restartPolicy }, 'clearing session');
    /** When either feed last confirmed an exchange restart: the other feed's restart soon after is the same one. */
    let restartConfirmedAt = { clearing: 0, market_data: 0 };
    const SAME_RESTART_MS = 60_000;

    const publisher = new FillPublisher(nc, log, fillSessionId(sessions.session), opts.maxInFlight ?? 512, opts.ackTimeoutMs ?? 5000);
    const clearing = new ClearingFeed(
      {
        publisher,
        log,
        alert: (a) => alert('clearing', a),
        beginSession: async (detail, seq) => {
          const n = await sessions.beginAfter(sessions.session, seq);
          await publishMarker(n, detail);
          publisher.session = fillSessionId(n);
        },
        onRestartConfirmed: () => (restartConfirmedAt = { ...restartConfirmedAt, clearing: Date.now() }),
      },
      startSeq,
    );
    // An exchange restart while no bridge listened shows first on market data (below): fills wait for its verdict.
    const saved = sessions.record.md_seq !== undefined ? { seq: sessions.record.md_seq, ts: BigInt(sessions.record.md_ts ?? '0') } : null;
    let verdictPending = saved !== null;
    if (verdictPending) clearing.hold();
    const verdictTimer = setTimeout(() => {
      // No market data at all: go on with the clearing feed's own evidence.
      verdictPending = false;
      clearing.open();
    }, 2000);
    verdictTimer.unref();

    const md = new MarketData();
    const bboStore = new LatestPerKey(bboKv, log);
    const publishBbos = (bbos: Bbo[]) => {
      for (const b of bbos) {
        const data = encode(b);
        nc.publish(bboSubject(b.symbol), data);
        bboStore.put(String(b.symbol), data);
      }
    };
    const mdCounters = md.tracker.counters;
    const mdGuard = new RunGuard<MdMessage>(0);
    let mdLastTs = 0n;
    /** Market data proved an exchange restart: the clearing feed begins the new session now, unless it already did. */
    const mdRestart = (detail: string) => {
      publishBbos(md.restart());
      alert('market_data', { kind: 'exchange_restart', detail });
      log.warn({ detail }, 'exchange restart on market data');
      restartConfirmedAt = { ...restartConfirmedAt, market_data: Date.now() };
      if (Date.now() - restartConfirmedAt.clearing > SAME_RESTART_MS) clearing.restartProven(detail);
    };
    const applyLive = (msgs: MdMessage[]) => {
      if (msgs.length === 0) return;
      const { notices, bbos } = md.onLive(msgs, Date.now());
      for (const n of notices) {
        if (n.event.kind === 'gap') {
          const e = n.event;
          alert('market_data', { kind: 'gap', detail: `market-data seq gap: expected ${e.expected}, received ${e.received}; books resync from the snapshot feed`, expected: e.expected, received: e.received });
        }
      }
      publishBbos(bbos);
      alertDistrust();
    };
    const alertDistrust = () => {
      for (const detail of md.drainDistrust()) {
        log.warn({ detail }, 'order book distrusted');
        alert('market_data', { kind: 'book_distrusted', detail });
      }
    };
    const onLive = (buf: Buffer, sender: string) => {
      mdCounters.datagrams++;
      const d = decodeMdDatagram(buf, 'live');
      if (d.error) {
        mdCounters.bad_datagrams++;
        log.warn({ error: d.error, bytes: buf.byteLength }, 'bad market-data datagram');
        alert('market_data', { kind: 'bad_datagram', detail: d.error });
      }
      if (verdictPending && d.messages.length > 0) {
        // The first market data after a start: did the exchange restart while no bridge listened?
        verdictPending = false;
        clearTimeout(verdictTimer);
        const first = d.messages[0]!;
        if (saved && (first.seq + 64 < saved.seq || first.timestamp < saved.ts)) {
          mdRestart(`market data is at seq ${first.seq} (timestamp ${first.timestamp}) where it was at ${saved.seq} (${saved.ts}) before this bridge started: the exchange restarted while no bridge listened`);
        }
        clearing.open();
      }
      let pass: MdMessage[] = [];
      for (const m of d.messages) {
        for (const o of mdGuard.observe(m.seq, sender, m)) {
          if (o.kind === 'pass') pass.push(o.msg);
          else if (o.kind === 'stray') {
            mdCounters.strays = (mdCounters.strays ?? 0) + o.msgs.length;
            alert('market_data', { kind: 'stray', detail: `market data: ${o.msgs.length} message(s) from seq ${o.from} ignored: they went back in seq and no run of their own followed (not an exchange restart)`, received: o.from });
          } else if (o.kind === 'confirmed') {
            applyLive(pass);
            pass = [];
            if (o.restart) mdRestart(`market-data seq_num went back from ${md.tracker.last} to ${o.from}, and ${o.msgs.length} in-order messages followed: exchange restart; books cleared`);
            else md.tracker.reanchor(o.from - 1);
            applyLive(o.msgs);
          }
        }
        if (m.timestamp > mdLastTs) mdLastTs = m.timestamp;
      }
      applyLive(pass);
      mdCounters.held = mdGuard.pending;
    };
    const onSnapshot = (buf: Buffer, _sender: string) => {
      const d = decodeMdDatagram(buf, 'snapshot');
      if (d.error) {
        md.stats.snapshot_bad_datagrams++;
        log.warn({ error: d.error, bytes: buf.byteLength }, 'bad snapshot datagram');
      }
      publishBbos(md.onSnapshot(d.messages));
      alertDistrust();
    };

    // Only the exchange's host may feed the bridge when NDFEX_SOURCE names it; anyone else's datagrams are counted and dropped.
    const allowed = opts.sources && opts.sources.length > 0 ? new Set(opts.sources) : null;
    const fromSource = (feed: FeedAlert['feed'], counters: FeedCounters, on: (buf: Buffer, sender: string) => void) => (buf: Buffer, sender: string) => {
      if (allowed && !allowed.has(sender.slice(0, sender.lastIndexOf(':')))) {
        counters.foreign = (counters.foreign ?? 0) + 1;
        alert(feed, { kind: 'foreign', detail: `datagram from ${sender}, not an NDFEX_SOURCE address: ignored` });
        return;
      }
      on(buf, sender);
    };
    const snapshotCounters = { foreign: 0 } as FeedCounters;
    receivers.push(await joinGroup(opts.clearing, opts.iface, fromSource('clearing', clearing.counters, (b, s) => clearing.onDatagram(b, s))));
    receivers.push(await joinGroup(opts.marketData, opts.iface, fromSource('market_data', mdCounters, onLive)));
    receivers.push(await joinGroup(opts.snapshot, opts.iface, fromSource('market_data', snapshotCounters, onSnapshot)));

    const status = (): FeedStatus => ({ clearing: { ...clearing.counters }, market_data: { ...mdCounters }, ts: Date.now() });
    const tick = () => {
      const s = status();
      const data = encode(s);
      publishQuiet(nc, log, FEED_STATUS_SUBJECT, undefined, data);
      putQuiet(feedKv, log, FEED_STATUS_KEY, data);
      // While a new session is not begun yet, the tracker's seq belongs to a session the store does not know.
      if (clearing.restartsPending === 0 && clearing.tracker.last > sessions.record.last_seq) {
        sessions.saveProgress(clearing.tracker.last, { seq: md.tracker.last, ts: mdLastTs }).catch((err) => log.warn({ err: String(err) }, 'could not save clearing progress'));
      }
    };
    timer = setInterval(tick, opts.statusIntervalMs ?? 1000);
    timer.unref();
    log.info({ clearing: opts.clearing, marketData: opts.marketData, snapshot: opts.snapshot, iface: opts.iface }, 'feed bridge ready');

    let closed = false;
    return {
      clearing,
      marketData: md,
      publisher,
      stats: () => ({ status: status(), publisher: { ...publisher.stats }, session: sessions.session, invalidFills: clearing.invalidFills, md: { ...md.stats }, alerts }),
      idle: () => publisher.idle(),
      close: async () => {
        if (closed) return;
        closed = true;
        clearInterval(timer);
        await Promise.all(receivers.map((r) => r.close()));
        // Give in-flight fills a bounded chance to be acked before giving up on them.
        await Promise.race([publisher.idle(), new Promise((r) => setTimeout(r, 5000).unref())]);
        publisher.close();
        await Promise.race([bboStore.flushed(), new Promise((r) => setTimeout(r, 2000).unref())]);
        bboStore.close();
        clearTimeout(verdictTimer);
        if (clearing.restartsPending === 0) await sessions.saveProgress(clearing.tracker.last, { seq: md.tracker.last, ts: mdLastTs }).catch((err) => log.warn({ err: String(err) }, 'could not save clearing progress at stop'));
        tick();
        await nc.drain();
      },
    };
  } catch (err) {
    clearInterval(timer);
    await Promise.all(receivers.map((r) => r.close()));
    // The start's own error (thrown below) is the one to report, not a close of a connection that may be gone.
    await nc.close().catch(() => {});
    throw err;
  }
}

/** The clearing seq of the last fill JetStream stored for `session` (0 when the stream's last message is not one). */
async function lastStoredFillSeq(nc: NatsConnection, session: string): Promise<number> {
  const jsm = await jetstreamManager(nc);
  const { state } = await jsm.streams.info(FILL_STREAM);
  if (state.last_seq === 0) return 0;
  // A deleted last message is null; a timeout is not "no fill" (it would restart the session count), and is thrown.
  const m = await jsm.streams.getMessage(FILL_STREAM, { seq: state.last_seq });
  const id = m?.header?.get('Nats-Msg-Id') ?? '';
  const prefix = fillMsgId(session, 0).slice(0, -1);
  return id.startsWith(prefix) ? Number(id.slice(prefix.length)) || 0 : 0;
}

function publishQuiet(nc: NatsConnection, log: Logger, subject: string, payload: unknown, data?: Uint8Array): void {
  try {
    nc.publish(subject, data ?? encode(payload));
  } catch (err) {
    log.warn({ subject, err: String(err) }, 'publish failed');
  }
}

function putQuiet(kv: KV, log: Logger, key: string, data: Uint8Array): void {
  kv.put(key, data).catch((err: unknown) => log.warn({ key, err: String(err) }, 'kv put failed'));
}
