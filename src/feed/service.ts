import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { decode, encode } from '../../proto/codec.js';
import { decodeMdDatagram, type ClearingMessage, type MdMessage } from '../../proto/ndfex.js';
import type { SessionMarker } from '../../proto/fill.js';
import { FILL_STREAM, SESSION_SUBJECT, fillMsgId } from '../../proto/subjects.js';
import { BBO_BUCKET, FEED_ALERT_SUBJECT, FEED_STATUS_SUBJECT, bboSubject, type Bbo, type FeedAlert, type FeedCounters, type FeedStatus } from '../../proto/marketdata.js';
import {
  FEED_BUCKET,
  FEED_CONTROL_REPLY_PREFIX,
  FEED_CONTROL_SUBJECT,
  FEED_PROBLEMS_KEY,
  FEED_STATUS_KEY,
  fillSessionId,
  sessionMarkerMsgId,
  feedProblemProblem,
  type FeedControlReply,
  type FeedControlRequest,
  type FeedProblem,
} from '../../proto/feed.js';
import { connectNats } from '../shared/nats.js';
import { LatestPerKey } from '../shared/latest-kv.js';
import { ensureFillStream, openBucket } from '../shared/streams.js';
import type { Logger } from '../shared/log.js';
import type { BridgeConfig } from './config.js';
import { AlertThrottle } from './alerts.js';
import { ClearingFeed } from './clearing.js';
import { MarketData } from './marketdata.js';
import { DEFAULT_JUDGE, SessionJudge, type AnyMsg, type Decision, type FeedName, type Verdict } from './verdict.js';
import { ProblemBook } from './problems.js';
import { joinGroup, type Receiver } from './multicast.js';
import { FillPublisher, type PublisherStats } from './publisher.js';
import { SessionStore } from './session.js';

export type BridgeOptions = Pick<BridgeConfig, 'natsUrl' | 'clearing' | 'marketData' | 'snapshot' | 'iface' | 'sessionName' | 'restartPolicy'> &
  Partial<Pick<BridgeConfig, 'sources'>> &
  Partial<Pick<BridgeConfig, 'statusIntervalMs' | 'maxInFlight' | 'verdictWindowMs'>> & {
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

    const publisher = new FillPublisher(nc, log, fillSessionId(sessions.session), opts.maxInFlight ?? 512, opts.ackTimeoutMs ?? 5000);
    const problems = new ProblemBook(await loadProblems(feedKv, log));
    /** Clearing fills missed since the operator last acknowledged them (the gap problem's figure). */
    let missedSinceAck = 0;
    const judge = new SessionJudge(
      { windowMs: opts.verdictWindowMs ?? DEFAULT_JUDGE.windowMs, minMessages: DEFAULT_JUDGE.minMessages },
      {
        clearing: { seq: startSeq },
        ...(sessions.record.md_seq !== undefined ? { market_data: { seq: sessions.record.md_seq, ts: BigInt(sessions.record.md_ts ?? '0') } } : {}),
        at: sessions.record.ts,
      },
    );
    const clearing = new ClearingFeed(
      {
        publisher,
        log,
        alert: (a) => {
          // Fills lost for good: a standing problem until the operator acknowledges it.
          if (a.kind === 'gap') {
            if (!problems.get('gap-clearing')) missedSinceAck = 0;
            missedSinceAck += (a.received ?? 0) - (a.expected ?? 0);
            problems.raise({ id: 'gap-clearing', kind: 'gap', feed: 'clearing', detail: `clearing fills missed for good: ${missedSinceAck} (latest gap: expected seq ${a.expected}, received ${a.received}); positions may be incomplete`, actions: ['ack'] }, Date.now());
          } else if (a.kind === 'late_join') {
            problems.raise({ id: `late-join-${sessions.session}`, kind: 'late_join', feed: 'clearing', detail: `${a.detail}; positions may be incomplete`, actions: ['ack'] }, Date.now());
          }
          alert('clearing', a);
        },
        beginSession: async (detail, seq) => {
          const n = await sessions.beginAfter(sessions.session, seq);
          await publishMarker(n, detail);
          publisher.session = fillSessionId(n);
        },
        route: (m, sender) => handle(judge.observe('clearing', m, sender, Date.now())),
      },
      startSeq,
    );
    // An exchange restart while no bridge listened shows first on market data: fills wait until it is heard (or not, for 2 s).
    let gateOpen = sessions.record.md_seq === undefined;
    if (!gateOpen) clearing.hold();
    const openGate = () => {
      if (gateOpen) return;
      gateOpen = true;
      clearTimeout(gateTimer);
      clearing.open();
    };
    const gateTimer = setTimeout(openGate, 2000);
    gateTimer.unref();

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
    const countersOf = (feed: FeedName): FeedCounters => (feed === 'clearing' ? clearing.counters : mdCounters);
    let mdLastTs = 0n;
    const applyLive = (msgs: MdMessage[]) => {
      if (msgs.length === 0) return;
      for (const m of msgs) if (m.timestamp > mdLastTs) mdLastTs = m.timestamp;
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

    /** Acts on the session verdict's decisions, in order; market-data messages let through are applied in batches. */
    const handle = (ds: Decision[]) => {
      let mdPass: MdMessage[] = [];
      const flushMd = () => {
        applyLive(mdPass);
        mdPass = [];
      };
      const now = Date.now();
      for (const d of ds) {
        if (d.kind === 'pass') {
          if (d.feed === 'clearing') clearing.accept(d.msg as ClearingMessage);
          else mdPass.push(d.msg as MdMessage);
          continue;
        }
        flushMd();
        switch (d.kind) {
          case 'conflict': {
            const c = countersOf(d.feed);
            c.conflicts = (c.conflicts ?? 0) + 1;
            const detail = `${d.feed} seq ${d.seq} came twice with other content: applied ${d.applied.fingerprint} from ${d.applied.sender} (${describeMsg(d.applied.msg)}), not ${d.other.fingerprint} from ${d.other.sender} (${describeMsg(d.other.msg)})`;
            log.warn({ feed: d.feed, seq: d.seq, applied: d.applied.fingerprint, other: d.other.fingerprint, appliedFrom: d.applied.sender, otherFrom: d.other.sender }, 'seq conflict');
            alert(d.feed, { kind: 'conflict', detail, received: d.seq, fingerprints: [d.applied.fingerprint, d.other.fingerprint] });
            problems.raise({ id: `conflict-${d.feed}`, kind: 'conflict', feed: d.feed, detail: `latest: ${detail}`, actions: ['ack'] }, now);
            break;
          }
          case 'opened': {
            const v = d.verdict;
            if (v.kind === 'jump') countersOf(v.feed).jumps = (countersOf(v.feed).jumps ?? 0) + 1;
            const detail = `${describeVerdict(v)}; the session followed: ${(['market_data', 'clearing'] as const).map((f) => `${f} ${judge.followedAt(f)}`).join(', ')}`;
            log.warn({ verdict: v.id, kind: v.kind, feed: v.feed, detail }, 'exchange session verdict pending');
            alert(v.kind === 'jump' ? v.feed : firstFeed(v), { kind: v.kind === 'jump' && !v.impostor ? 'far_jump' : 'verdict_pending', detail, verdict: v.id, received: v.runs[v.kind === 'jump' ? v.feed : firstFeed(v)]?.from });
            problems.raise({ id: v.id, kind: 'verdict_pending', feed: v.kind === 'jump' ? v.feed : firstFeed(v), detail, actions: ['confirm', 'reject'] }, now);
            break;
          }
          case 'rejected': {
            const v = d.verdict;
            const c = countersOf(firstFeed(v));
            c.rejected_restarts = (c.rejected_restarts ?? 0) + 1;
            const detail = `claimed exchange restart rejected, nothing reset: ${d.why}; its messages are held, never applied (forged, or the operator may still confirm it)`;
            log.warn({ verdict: v.id, why: d.why }, 'exchange restart rejected');
            alert(firstFeed(v), { kind: 'restart_rejected', detail, verdict: v.id });
            problems.raise({ id: v.id, kind: 'restart_rejected', feed: firstFeed(v), detail, actions: ['confirm', 'ack'] }, now);
            break;
          }
          case 'dropped': {
            const v = d.verdict;
            const feed = v.kind === 'jump' ? v.feed : firstFeed(v);
            const c = countersOf(feed);
            c.strays = (c.strays ?? 0) + d.strays;
            const detail = `${feed}: ${d.strays} message(s) from seq ${v.runs[feed]?.from ?? '?'} ignored, never applied: ${d.why}`;
            log.warn({ verdict: v.id, strays: d.strays, why: d.why }, 'held messages dropped');
            alert(feed, { kind: 'stray', detail, verdict: v.id, received: v.runs[feed]?.from });
            problems.resolve(v.id);
            if (d.byOperator) alert(feed, { kind: 'verdict_decided', detail: `verdict ${v.id} ${d.why}`, verdict: v.id });
            else if (v.kind === 'jump') problems.raise({ id: `jump-rejected-${feed}`, kind: 'jump_rejected', feed, detail: `runs held and dropped, never applied: far seq jumps or another sender continuing the session (latest: ${detail})`, actions: ['ack'] }, now);
            else problems.raise({ id: 'restart-rejected', kind: 'restart_rejected', feed, detail: `claimed exchange restarts not believed, nothing reset (latest: ${detail})`, actions: ['ack'] }, now);
            break;
          }
          case 'accepted': {
            const v = d.verdict;
            problems.resolve(v.id);
            log.warn({ verdict: v.id, by: d.by, detail: d.detail }, 'exchange session verdict accepted');
            if (d.by === 'operator') alert(v.kind === 'jump' ? v.feed : firstFeed(v), { kind: 'verdict_decided', detail: `verdict ${v.id} ${d.detail}`, verdict: v.id });
            if (v.kind === 'restart') {
              publishBbos(md.restart());
              alert('market_data', { kind: 'exchange_restart', detail: `${d.detail}; books cleared`, verdict: v.id });
              // The marker goes into the stream (a publisher barrier) before any fill of the new session.
              clearing.beginNewSession(d.detail, d.clearing[0]?.seq ?? 0);
            }
            for (const m of d.clearing) clearing.accept(m);
            mdPass = d.md;
            flushMd();
            break;
          }
        }
      }
      flushMd();
    };

    const onLive = (buf: Buffer, sender: string) => {
      mdCounters.datagrams++;
      const d = decodeMdDatagram(buf, 'live');
      if (d.error) {
        mdCounters.bad_datagrams++;
        log.warn({ error: d.error, bytes: buf.byteLength }, 'bad market-data datagram');
        alert('market_data', { kind: 'bad_datagram', detail: d.error });
      }
      const now = Date.now();
      const ds: Decision[] = [];
      for (const m of d.messages) for (const x of judge.observe('market_data', m, sender, now)) ds.push(x);
      handle(ds);
      // The first market data after a start has told whether the exchange restarted while no bridge listened.
      if (d.messages.length > 0) openGate();
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

    const status = (): FeedStatus => ({
      clearing: { ...clearing.counters, held: judge.held('clearing') },
      market_data: { ...mdCounters, held: judge.held('market_data') },
      problems: problems.list(),
      ts: Date.now(),
    });
    const controlSub = nc.subscribe(FEED_CONTROL_SUBJECT, {
      callback: (err, msg) => {
        if (err) return;
        const reply = control(msg.data);
        // The feed role may answer only under FEED_CONTROL_REPLY_PREFIX (proto/roles.ts).
        if (msg.reply?.startsWith(FEED_CONTROL_REPLY_PREFIX)) publishQuiet(nc, log, msg.reply, reply);
        if (reply.ok) tick();
      },
    });
    const control = (data: Uint8Array): FeedControlReply => {
      let r: Partial<FeedControlRequest> & { decision?: unknown };
      try {
        r = decode<Partial<FeedControlRequest>>(data) ?? {};
      } catch {
        return { ok: false, code: 'invalid_parameter', message: 'undecodable request' };
      }
      const by = typeof r.by === 'string' ? r.by.slice(0, 64) : 'operator';
      if (typeof r.id !== 'string' || r.id === '') return { ok: false, code: 'invalid_parameter', message: 'id: a problem id is required' };
      const now = Date.now();
      if (r.op === 'verdict') {
        if (r.decision !== 'confirm' && r.decision !== 'reject') return { ok: false, code: 'invalid_parameter', message: 'decision: confirm or reject' };
        const ds = judge.decide(r.id, r.decision, by, now);
        if (!ds) return { ok: false, code: 'not_found', message: `no verdict ${r.id} waits for a decision` };
        log.warn({ verdict: r.id, decision: r.decision, by }, 'operator decided an exchange session verdict');
        handle(ds);
        return { ok: true, done: [r.id], problems: problems.list() };
      }
      if (r.op === 'ack') {
        // Acknowledging a rejected restart drops what it held: the operator has seen it and does not confirm it.
        const live = judge.verdicts().find((v) => v.id === r.id && v.status === 'rejected');
        if (live) handle(judge.decide(live.id, 'reject', by, now) ?? []);
        const done = problems.ack(r.id);
        if (done.length === 0 && !live) return { ok: false, code: 'not_found', message: r.id === 'all' ? 'no problem to acknowledge' : `no problem ${r.id} to acknowledge (pending verdicts take confirm or reject)` };
        log.info({ ids: done, by }, 'operator acknowledged feed problems');
        return { ok: true, done: live ? [r.id, ...done.filter((x) => x !== r.id)] : done, problems: problems.list() };
      }
      return { ok: false, code: 'invalid_parameter', message: 'op: verdict or ack' };
    };
    const tick = () => {
      handle(judge.tick(Date.now()));
      for (const v of judge.verdicts()) if (v.status === 'pending') problems.describe(v.id, describeVerdict(v));
      if (problems.changed) {
        problems.changed = false;
        putQuiet(feedKv, log, FEED_PROBLEMS_KEY, encode(problems.list()));
      }
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
        clearTimeout(gateTimer);
        controlSub.unsubscribe();
        if (clearing.restartsPending === 0) {
          await sessions.saveProgress(clearing.tracker.last, { seq: md.tracker.last, ts: mdLastTs }).catch((err) => log.warn({ err: String(err) }, 'could not save clearing progress at stop'));
        }
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

/** The feed a restart verdict was first seen on. */
const firstFeed = (v: Verdict): FeedName => {
  const c = v.runs.clearing;
  const m = v.runs.market_data;
  return c && (!m || c.firstAt <= m.firstAt) ? 'clearing' : m ? 'market_data' : v.feed;
};

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
