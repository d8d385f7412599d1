import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { encode } from '../../proto/codec.js';
import { decodeMdDatagram } from '../../proto/ndfex.js';
import type { SessionMarker } from '../../proto/fill.js';
import { SESSION_SUBJECT } from '../../proto/subjects.js';
import { BBO_BUCKET, FEED_ALERT_SUBJECT, FEED_STATUS_SUBJECT, bboSubject, type Bbo, type FeedAlert, type FeedStatus } from '../../proto/marketdata.js';
import { FEED_BUCKET, FEED_STATUS_KEY, fillSessionId, sessionMarkerMsgId } from '../../proto/feed.js';
import { connectNats } from '../shared/nats.js';
import { ensureFillStream, openBucket } from '../shared/streams.js';
import type { Logger } from '../shared/log.js';
import type { BridgeConfig } from './config.js';
import { AlertThrottle } from './alerts.js';
import { ClearingFeed } from './clearing.js';
import { MarketData } from './marketdata.js';
import { joinGroup, type Receiver } from './multicast.js';
import { FillPublisher, type PublisherStats } from './publisher.js';
import { SessionStore } from './session.js';

export type BridgeOptions = Pick<BridgeConfig, 'natsUrl' | 'clearing' | 'marketData' | 'snapshot' | 'iface' | 'sessionName' | 'restartPolicy'> &
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
    const startSeq = sessions.record.last_seq;
    log.info({ session: sessions.session, sessionName: sessions.record.name, lastSeq: startSeq, policy: opts.restartPolicy }, 'clearing session');

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
      },
      startSeq,
    );

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
    const onLive = (buf: Buffer) => {
      mdCounters.datagrams++;
      const d = decodeMdDatagram(buf, 'live');
      if (d.error) {
        mdCounters.bad_datagrams++;
        log.warn({ error: d.error, bytes: buf.byteLength }, 'bad market-data datagram');
        alert('market_data', { kind: 'bad_datagram', detail: d.error });
      }
      const { notices, bbos } = md.onLive(d.messages, Date.now());
      for (const n of notices) {
        if (n.event.kind === 'gap') {
          const e = n.event;
          alert('market_data', { kind: 'gap', detail: `market-data seq gap: expected ${e.expected}, received ${e.received}; books resync from the snapshot feed`, expected: e.expected, received: e.received });
        } else {
          alert('market_data', { kind: 'exchange_restart', detail: `market-data seq_num went back from ${n.event.previous} to ${n.seq}: books cleared`, received: n.seq });
        }
      }
      publishBbos(bbos);
    };
    const onSnapshot = (buf: Buffer) => {
      const d = decodeMdDatagram(buf, 'snapshot');
      if (d.error) {
        md.stats.snapshot_bad_datagrams++;
        log.warn({ error: d.error, bytes: buf.byteLength }, 'bad snapshot datagram');
      }
      publishBbos(md.onSnapshot(d.messages));
    };

    receivers.push(await joinGroup(opts.clearing, opts.iface, (b) => clearing.onDatagram(b)));
    receivers.push(await joinGroup(opts.marketData, opts.iface, onLive));
    receivers.push(await joinGroup(opts.snapshot, opts.iface, onSnapshot));

    const status = (): FeedStatus => ({ clearing: { ...clearing.counters }, market_data: { ...mdCounters }, ts: Date.now() });
    const tick = () => {
      const s = status();
      const data = encode(s);
      publishQuiet(nc, log, FEED_STATUS_SUBJECT, undefined, data);
      putQuiet(feedKv, log, FEED_STATUS_KEY, data);
      // While a new session is not begun yet, the tracker's seq belongs to a session the store does not know.
      if (clearing.restartsPending === 0 && clearing.tracker.last > sessions.record.last_seq) {
        sessions.saveProgress(clearing.tracker.last).catch((err) => log.warn({ err: String(err) }, 'could not save clearing progress'));
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
        if (clearing.restartsPending === 0) await sessions.saveProgress(clearing.tracker.last).catch(() => {});
        tick();
        await nc.drain();
      },
    };
  } catch (err) {
    clearInterval(timer);
    await Promise.all(receivers.map((r) => r.close()));
    await nc.close().catch(() => {});
    throw err;
  }
}

function publishQuiet(nc: NatsConnection, log: Logger, subject: string, payload: unknown, data?: Uint8Array): void {
  try {
    nc.publish(subject, data ?? encode(payload));
  } catch (err) {
    log.warn({ subject, err: String(err) }, 'publish failed');
  }
}

/**
 * KV writes of the latest value per key, at most one in flight per key: a
 * burst of changes to one symbol costs one write now and one with the last
 * value after it, not one JetStream round trip each.
 */
class LatestPerKey {
  private readonly dirty = new Map<string, Uint8Array>();
  private readonly busy = new Set<string>();
  private waiters: Array<() => void> = [];
  private closed = false;

  constructor(
    private readonly kv: KV,
    private readonly log: Logger,
  ) {}

  put(key: string, data: Uint8Array): void {
    this.dirty.set(key, data);
    if (!this.busy.has(key)) this.write(key);
  }

  flushed(): Promise<void> {
    return this.busy.size === 0 ? Promise.resolve() : new Promise((r) => this.waiters.push(r));
  }

  private write(key: string): void {
    const data = this.dirty.get(key);
    if (!data) {
      this.busy.delete(key);
      if (this.busy.size === 0) for (const w of this.waiters.splice(0)) w();
      return;
    }
    this.dirty.delete(key);
    this.busy.add(key);
    this.kv.put(key, data).then(
      () => this.write(key),
      (err: unknown) => {
        if (this.closed) return this.write(key);
        this.log.warn({ key, err: String(err) }, 'kv put failed: retrying');
        if (!this.dirty.has(key)) this.dirty.set(key, data);
        setTimeout(() => this.write(key), 500).unref();
      },
    );
  }

  /** Drops what is not written yet. */
  close(): void {
    this.closed = true;
    this.dirty.clear();
  }
}

function putQuiet(kv: KV, log: Logger, key: string, data: Uint8Array): void {
  kv.put(key, data).catch((err: unknown) => log.warn({ key, err: String(err) }, 'kv put failed'));
}
