import type { NatsConnection, Msg, Subscription } from '@nats-io/transport-node';
import { encode, encodeRecords, encodeSelfContained, decodeRecordsAs } from '../../proto/codec.js';
import {
  ENGINE_PROTOCOL_VERSION,
  commandBatchShape,
  commandProblem,
  type CommandBatch,
  type EngineCommand,
  type EngineReply,
  type Rejection,
  type ReplyBatch,
} from '../../proto/engine.js';
import type { Delta, JournalEvent } from '../../proto/journal.js';
import { MAX_BATCH_NOTICES, type HoldingsChange, type HoldingsNotice } from '../../proto/holdings.js';
import type { Fill } from '../../proto/fill.js';
import { ADMIN_REPLY_SUBJECT_PREFIX, ENGINE_ADMIN_OPS, ENGINE_NAMES_OPS, REPLY_SUBJECT_PREFIX } from '../../proto/subjects.js';
import { inboxPrefix } from '../../proto/roles.js';
import type { Logger } from '../shared/log.js';
import { Unreadable } from '../shared/unreadable.js';
import { decide, applyEvent, accountPositions, basketVersions, lastResetView, malformed, requestIdString, type CoreConfig, type Decision } from './core.js';
import { basketKvSubject, type BasketVersions } from '../../proto/marketdata.js';
import type { OutcomeNotice } from '../../proto/requests.js';
import type { DumpResult, FlatPositions } from '../../proto/engine.js';
import type { Account, EngineState } from './state.js';
import { conversionBytesAtMost, journalMessageBytes, type JournalMessages, type JournalWriter } from './journal.js';
import { EngineFault } from './fault.js';
import { SnapshotCapture, snapshotParts } from './snapshot.js';
import type { SnapshotStore } from './snapshot-store.js';
import { NextTurn } from '../shared/next-turn.js';
import { maxPayload } from '../shared/nats.js';
import { noticeBatches } from './notice-batches.js';
import { shardNames, type ShardNames } from '../../proto/shards.js';

export interface SnapshotPolicy {
  store: SnapshotStore;
  /** Journaled events between snapshots; bounds the replay at start-up. */
  every: number;
}

/**
 * Events per group commit. Well under NATS's 1 MB payload limit, and small
 * enough that a burst (a gateway's whole batch) becomes several groups: with
 * WRITES_IN_FLIGHT writes at once, the first group's answers are out while
 * the next is written, instead of the burst waiting as one. On a server with
 * a small max_payload a group is written as several journal messages
 * (JournalWriter.prepare).
 */
const GROUP_EVENTS = 128;
/**
 * Group commits written at once: while one write is in flight a full next
 * group goes out too, so under a burst the engine works while the journal
 * answers (JournalWriter keeps them in order). Two hide most of a write's wait.
 */
const WRITES_IN_FLIGHT = 2;
/** A snapshot is imaged and packed in slices of about this long, between which commands and fills go on. */
const CAPTURE_SLICE_MS = 4;
/** Accounts imaged between two looks at the clock. */
const CAPTURE_STEP_ACCOUNTS = 8;

interface Group {
  events: JournalEvent[];
  /** Where in the fill stream the state stood as each event was applied (proto/journal.ts JournalBatch `fills`), and the last one recorded. */
  fills: number[];
  fillSeq: number;
  /** reply subject → replies released once the group is durable */
  replies: Map<string, EngineReply[]>;
  /** Holdings changes and request outcomes, published in apply order once the group is durable (proto/holdings.ts NoticeBatch). */
  changes: HoldingsNotice[];
  outcomes: OutcomeNotice[];
  /** Per outcome: how many of `changes` came before it (a conversion's own change is the last of them). */
  outcomeAfter: number[];
  /** Entries of the baskets bucket, put once the group is durable. */
  baskets: { etf: string; payload: Uint8Array }[];
  /**
   * Its journal messages, once a sequence had to be named past it (stateJournalSeq): written as they are then,
   * so the sequence named is the one its last message takes.
   */
  prepared: JournalMessages | null;
}

const newGroup = (): Group => ({ events: [], fills: [], fillSeq: -1, replies: new Map(), changes: [], outcomes: [], outcomeAfter: [], baskets: [], prepared: null });
const isEmpty = (g: Group) => g.events.length === 0 && g.replies.size === 0 && g.changes.length === 0 && g.outcomes.length === 0 && g.baskets.length === 0;

/**
 * The single writer. Commands are decided and applied synchronously in
 * arrival order; their events are committed in groups (one journal write for
 * the commands of one or more turns, up to WRITES_IN_FLIGHT writes at once),
 * and groups are settled strictly in order: no reply, read or write, leaves
 * before everything it could have observed is durable. A failed journal write
 * (or a publish the connection refuses) stops the process: its in-memory state
 * may be ahead of the journal, and a restart rebuilds it from the journal.
 */
export class EngineActor {
  /** Groups not yet sent to the journal; the last one takes new commands. */
  private readonly groups: Group[] = [newGroup()];
  /** Groups sent to the journal (or with nothing to write), settled in this order. */
  private readonly inFlight: { group: Group; write: Promise<number> | null }[] = [];
  private settling: Promise<void> | null = null;
  private failed = false;
  // The next turn, not a microtask: lets every batch already read from the socket join this group.
  private readonly nextGroup = new NextTurn(() => void this.flush());
  private subs: Subscription[] = [];
  private noticesSubject = shardNames(0, 1).notices;
  private eventsSinceSnapshot = 0;
  /** A snapshot being imaged a few accounts per turn (SnapshotCapture), as the state stood at `journalSeq`. */
  private capturing: { journalSeq: number; capture: SnapshotCapture; timer: NodeJS.Immediate | null } | null = null;
  /** A snapshot taken from state that includes groups not yet written: saved once the journal reaches `journalSeq`. */
  private pendingSnapshot: { journalSeq: number; parts: Uint8Array[] } | null = null;
  private savingSnapshot: Promise<void> | null = null;
  /** Taking the final snapshot: no other is started. */
  private closing = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly state: EngineState,
    private readonly cfg: CoreConfig,
    private readonly journal: JournalWriter,
    private readonly log: Logger,
    private readonly onFatal: (err: unknown) => void,
    private readonly snapshots?: SnapshotPolicy,
    /** Called with each batch once durable (the scoreboard file). */
    private readonly onDurable?: (events: JournalEvent[], journalSeq: number) => void,
    /** Writes the baskets bucket with acknowledgement and retries (src/shared/latest-kv.ts); without it, a plain publish. */
    private readonly basketStore?: { put(key: string, data: Uint8Array): void },
    private readonly now: () => number = Date.now,
  ) {
    this.unreadable = new Unreadable(log, 'command from the bus');
  }

  /** Command batches and commands not of their wire shape (proto/engine.ts), per kind. */
  readonly unreadable: Unreadable;

  /** Subscribes, and resolves once the server has the subscription: "ready" must mean a request sent now is heard. */
  async start(names: ShardNames = shardNames(0, 1)): Promise<void> {
    this.noticesSubject = names.notices;
    const subscribe = (subject: string, entry: Entry) =>
      this.nc.subscribe(subject, {
        queue: names.queue,
        callback: (err, msg) => {
          if (err) return this.log.error({ err, subject }, 'command subscription error');
          this.onBatch(msg, entry);
        },
      });
    this.subs = [subscribe(names.command, 'command'), subscribe(names.admin, 'admin'), subscribe(names.names, 'names')];
    await this.nc.flush();
  }

  /** Stops taking commands and waits for every accepted one to be durable and answered. */
  async drain(): Promise<void> {
    for (const sub of this.subs) sub.unsubscribe();
    while (!this.failed && (this.inFlight.length > 0 || this.groups.some((g) => !isEmpty(g)))) {
      this.flush();
      await (this.settling ?? new Promise((r) => setImmediate(r)));
    }
  }

  /** `entry`: the subject it came on (Entry). */
  private onBatch(msg: Msg, entry: Entry): void {
    // Answers go only where answers belong: a reply subject of another kind (a stream's, say) is never written.
    if (!msg.reply?.startsWith(REPLY_PREFIX[entry])) {
      this.log.warn({ reply: msg.reply, subject: msg.subject }, 'command batch without a proper reply subject ignored');
      return;
    }
    let batch: CommandBatch;
    try {
      batch = decodeRecordsAs(msg.data, commandBatchShape);
    } catch (err) {
      return this.unreadable.caught(err, { subject: msg.subject });
    }
    if (batch?.v !== ENGINE_PROTOCOL_VERSION || !Array.isArray(batch.cmds)) {
      const error: Rejection = { code: 'unsupported_version', speaks: ENGINE_PROTOCOL_VERSION };
      const replies = (batch?.cmds ?? []).map((c): EngineReply => ({ id: c.id, ok: false, error }));
      // Self-contained: a gateway of another version may not know the shared shapes, and must still read why it is refused.
      // Each refusal so is larger than its command: a batch that fit can be refused in more than one message holds,
      // and a publish thrown here, in the subscription's callback, closed this connection's reader.
      this.publishReplies(msg.reply, replies, encodeSelfContained);
      return;
    }
    const now = this.now();
    for (const { id, cmd } of batch.cmds) {
      const op = (cmd as { op?: string })?.op ?? '';
      const decision =
        entry === 'admin' && !ENGINE_ADMIN_OPS.has(op)
          ? ADMIN_REFUSAL
          : // A reservation only between engines, and nothing else where they ask: to anyone else it is no command.
            (entry === 'names') !== ENGINE_NAMES_OPS.has(op)
            ? malformed()
            : this.decide(cmd, now);
      const group = this.apply(decision.events);
      // Read once its events are applied: the core builds a conversion's answer only when asked, from the state after it.
      const reply: EngineReply =
        decision.kind === 'rejected'
          ? decision.replayOf === undefined
            ? { id, ok: false, error: decision.error }
            : { id, ok: false, error: decision.error, replayed: requestIdString(decision.replayOf) }
          : { id, ok: true, result: decision.result };
      const list = group.replies.get(msg.reply);
      if (list) list.push(reply);
      else group.replies.set(msg.reply, [reply]);
    }
    this.scheduleFlush();
  }

  /** Applies one decision's events and puts them in the open group (a new one when they would overfill it); returns that group. */
  private apply(events: JournalEvent[]): Group {
    let group = this.groups[this.groups.length - 1]!;
    if (events.length > 0 && group.events.length + events.length > GROUP_EVENTS) {
      group = newGroup();
      this.groups.push(group);
    }
    for (const ev of events) {
      applyEvent(this.state, ev);
      // The journal keeps each conversion's positions right after it for the audit trail: taken here, at the edge, as it is applied
      // (the same frozen list the answer and the notice carry).
      if (ev.t === 'conversion' && !ev.deltas) ev.held = accountPositions(this.state.accounts.get(ev.clientId)!) as number[];
      // Fills land between turns: one pair per change of position, so replay puts every event back among them where it was.
      if (this.state.fillSeq !== group.fillSeq) group.fills.push(group.events.length, (group.fillSeq = this.state.fillSeq));
      group.events.push(ev);
      this.noticesOf(ev, group);
    }
    return group;
  }

  /**
   * Events the engine decided itself, not from a command (the roster file
   * changed: src/engine/roster-watch.ts): applied now, between two commands,
   * and journaled in the open group like a command's. A command after them
   * sees them; its answer, as every answer, waits until they are durable.
   */
  decided(events: JournalEvent[]): void {
    if (events.length === 0) return;
    // A roster of thousands is several groups: each journal write stays far under NATS's payload limit.
    for (let i = 0; i < events.length; i += GROUP_EVENTS) this.apply(events.slice(i, i + GROUP_EVENTS));
    this.scheduleFlush();
  }

  /** The core's decision; a command it cannot read (fields not of their types) is refused, never the engine's end. */
  private decide(cmd: EngineCommand, now: number): Decision {
    const problem = commandProblem(cmd);
    if (problem !== null) {
      this.unreadable.note('command', { op: (cmd as { op?: unknown })?.op, problem });
      return malformed();
    }
    try {
      const d = decide(this.state, this.cfg, cmd, now);
      const tooLarge = d.events.length > 0 ? this.unjournalable(d.events) : null;
      if (tooLarge) {
        this.log.warn({ op: cmd.op, ...tooLarge }, 'a command whose journal record would be over the NATS payload limit: refused, nothing done');
        return { kind: 'rejected', error: { code: 'payload_too_large', ...tooLarge, journal: true }, events: [] };
      }
      if (cmd.op === 'dump' && d.kind === 'read') {
        // The state already holds the events of groups not yet written: name the journal sequence it will be the replay of.
        (d.result as DumpResult).journal_seq = this.sealOpenGroup();
      }
      return d;
    } catch (err) {
      this.log.warn({ err, op: (cmd as { op?: unknown })?.op }, 'command rejected');
      return malformed();
    }
  }

  /**
   * An event whose journal message would be over max_payload (a halt's reason or a key thousands of characters
   * long, on a server of a few KB): its bytes and the limit. Asked before the events are applied, as a refusal
   * can only be then: applied, an event that cannot be written takes the engine down at its write, and a client
   * retrying the command would take it down again at every start.
   */
  private unjournalable(events: JournalEvent[]): { bytes: number; limit: number } | null {
    const limit = this.maxPayload();
    for (const ev of events) {
      const bytes = journalMessageBytes(ev.t === 'conversion' ? this.conversionBytes(ev, limit) : encode(ev).byteLength);
      if (bytes > limit) return { bytes, limit };
    }
    return null;
  }

  /**
   * A conversion's journaled bytes, `held` included (its positions once applied), at most. On the hot path
   * counted without encoding it, from the account's symbol slots; when that bound is over `limit` (only on a
   * server of a few KB, or for a key thousands of characters long), from the event encoded and the account's
   * positions themselves.
   */
  private conversionBytes(ev: Extract<JournalEvent, { t: 'conversion' }>, limit: number): number {
    const acc = this.state.accounts.get(ev.clientId)!;
    const legs = this.state.catalog.of(ev).syms.length + 1;
    const quick = conversionBytesAtMost(ev, acc.pos.length + (acc.extra?.size ?? 0) + legs);
    if (journalMessageBytes(quick) <= limit) return quick;
    return conversionBytesAtMost(ev, accountPositions(acc).length / 2 + legs, true);
  }

  /**
   * A fill or session reset the feed applied. It is durable already (it is in
   * the fill stream) but its notice queues behind any conversion not yet
   * written, so every account's changes are published in seq order.
   */
  applied(acc: Account, cause: HoldingsChange['cause'], deltas: Delta[], fill?: Fill): void {
    const change = this.change(acc, cause, deltas.flat(), this.now());
    if (fill) change.fill = { seq: fill.seq, price: fill.price };
    // A stream's client learns where the new session began as it hears the reset, without asking for its holdings.
    if (cause === 'session_reset' && this.state.lastReset) change.last_reset = lastResetView(this.state.lastReset);
    this.groups[this.groups.length - 1]!.changes.push(change);
    this.scheduleFlush();
  }

  private noticesOf(ev: JournalEvent, group: Group): void {
    if (ev.t === 'basket') {
      // Published state for pricing and GET /etfs, once the change is durable (a KV put is a publish into its stream).
      const versions: BasketVersions = { etf: ev.etf, versions: basketVersions(this.state, ev.etf, this.cfg.instruments) };
      group.baskets.push({ etf: ev.etf, payload: encode(versions) });
    }
    if (ev.t === 'account' && (ev.opening?.length || ev.claimed?.positions.length)) {
      // An account that opens with positions (a roster line read while running): holdings streams and the desk learn them now, not at its next change.
      const acc = this.state.accounts.get(ev.clientId)!;
      const deltas = [...(ev.opening ?? []), ...(ev.claimed?.positions ?? [])].flat();
      group.changes.push(this.change(acc, 'opening', deltas, ev.ts));
    }
    if (ev.t === 'conversion') {
      const acc = this.state.accounts.get(ev.clientId)!;
      const deltas = this.state.catalog.flatDeltas(ev);
      group.changes.push(this.change(acc, ev.op, deltas, ev.ts));
      group.outcomes.push(outcome(ev, deltas));
      group.outcomeAfter.push(group.changes.length);
    }
    if (ev.t === 'rejected' && ev.kind !== 'register' && ev.clientId !== null) {
      group.outcomes.push(outcome(ev));
      group.outcomeAfter.push(group.changes.length);
    }
  }

  private change(acc: Account, cause: HoldingsChange['cause'], deltas: FlatPositions, now: number): HoldingsNotice {
    return { client_id: acc.clientId, seq: acc.version, cause, deltas, positions: accountPositions(acc), cash: acc.cash, ts: now };
  }

  private scheduleFlush(): void {
    if (this.inFlight.length === 0 || (this.inFlight.length < WRITES_IN_FLIGHT && this.groups.length > 1)) this.nextGroup.schedule();
  }

  /**
   * Sends groups to the journal: the next one when nothing is in flight, and a
   * second only when it is full (a burst): under a steady load a group keeps
   * filling while one write is out, so groups stay large and writes few.
   */
  private flush(): void {
    while (!this.failed && this.inFlight.length < WRITES_IN_FLIGHT && !isEmpty(this.groups[0]!) && (this.inFlight.length === 0 || this.groups.length > 1)) {
      const group = this.groups.shift()!;
      if (this.groups.length === 0) this.groups.push(newGroup());
      const write = group.events.length > 0 ? this.journal.append(group.events, group.fills, group.prepared ?? undefined) : null;
      // Awaited in order by settle; after a failure the later ones are not, and their rejection is expected.
      write?.catch(() => {});
      this.inFlight.push({ group, write });
      this.settling ??= this.settle().finally(() => (this.settling = null));
    }
  }

  /** Answers the groups in flight, in order, each once its write (and so every earlier one) is durable. */
  private async settle(): Promise<void> {
    while (this.inFlight.length > 0) {
      const { group, write } = this.inFlight[0]!;
      if (write) {
        try {
          this.state.journalSeq = await write;
        } catch (err) {
          this.fail(err);
          return;
        }
        this.afterWrite(group.events.length);
        this.onDurable?.(group.events, this.state.journalSeq);
      }
      this.inFlight.shift();
      try {
        this.sendReplies(group);
      } catch (err) {
        // A publish the client refuses (its connection closed or draining): thrown here, it ended the process as an
        // unhandled rejection naming the publish. What was answered is durable; the rest is answered unknown if the
        // bus still takes anything, and a restart serves again.
        this.fail(new EngineFault('NATS publish', err));
        return;
      }
      // A slot is free: the group that filled meanwhile goes out now.
      this.flush();
    }
  }

  /**
   * Journal sequence the in-memory state is the replay of (groups applied but not yet written, or in flight,
   * included). A group may take several journal messages (a small max_payload): the ones not yet sent are
   * prepared now and written as prepared, so the sequence named is exactly where the last of them lands.
   * Only with the open group sealed (sealOpenGroup): no group counted here takes another event.
   */
  private stateJournalSeq(): number {
    let seq = this.journal.queued;
    for (const g of this.groups) if (g.events.length > 0) seq += (g.prepared ??= this.journal.prepare(g.events, g.fills)).messages.length;
    return seq;
  }

  /**
   * The journal sequence the state is the replay of, made true for good: the
   * open group, when it holds events, takes no more (later commands start the
   * next). Without it a snapshot or a dump named the open group's sequence
   * while that group went on taking commands, so a start from the snapshot
   * skipped them (test/snapshot-seal.test.ts).
   */
  private sealOpenGroup(): number {
    if (this.groups[this.groups.length - 1]!.events.length > 0) {
      this.groups.push(newGroup());
      this.scheduleFlush();
    }
    return this.stateJournalSeq();
  }

  private afterWrite(events: number): void {
    if (!this.snapshots || this.snapshots.every <= 0) return;
    this.eventsSinceSnapshot += events;
    if (!this.capturing && !this.pendingSnapshot && !this.savingSnapshot && this.eventsSinceSnapshot >= this.snapshots.every) {
      this.eventsSinceSnapshot = 0;
      const journalSeq = this.sealOpenGroup();
      const capture = new SnapshotCapture(this.state, journalSeq, this.now());
      this.state.capture = capture;
      this.capturing = { journalSeq, capture, timer: null };
      this.captureStep();
    }
    this.savePending();
  }

  /** Images accounts, then packs them, a few milliseconds at a time, letting commands and fills in between. */
  private captureStep(): void {
    const c = this.capturing;
    if (!c) return;
    c.timer = null;
    const until = performance.now() + CAPTURE_SLICE_MS;
    let done = false;
    while (!(done = c.capture.step(CAPTURE_STEP_ACCOUNTS)) && performance.now() < until);
    // Every account imaged, nothing changes the snapshot any more.
    if (done) this.state.capture = null;
    while (done && !(done = c.capture.pack(1)) && performance.now() < until);
    if (!done) {
      c.timer = setImmediate(() => this.captureStep());
      return;
    }
    this.capturing = null;
    this.pendingSnapshot = { journalSeq: c.journalSeq, parts: c.capture.parts() };
    this.savePending();
  }

  /** Saves the snapshot taken, once the journal holds everything it includes. */
  private savePending(): void {
    const pending = this.pendingSnapshot;
    if (!this.snapshots || !pending || this.journal.sequence < pending.journalSeq) return;
    this.pendingSnapshot = null;
    this.savingSnapshot = this.snapshots.store
      .save(pending.parts, pending.journalSeq, this.now())
      .then(
        () => {
          this.log.info({ journalSeq: pending.journalSeq, bytes: pending.parts.reduce((n, p) => n + p.byteLength, 0) }, 'snapshot saved');
        },
        (err: unknown) => this.log.warn({ err }, 'snapshot not saved: start-up replays more journal'),
      )
      .finally(() => {
        this.savingSnapshot = null;
        // Events owed a snapshot while this one was taken and saved: the next is taken now, not only at a write that may never come.
        if (!this.failed && !this.closing) this.afterWrite(0);
      });
  }

  /** After drain: everything applied is durable, so the state is exactly the journal's replay. */
  async saveSnapshotNow(): Promise<void> {
    if (!this.snapshots) return;
    // After a fault the state may hold what the journal does not: a snapshot of it would make that durable.
    if (this.failed) throw new Error('the engine failed: no snapshot of a state the journal may not hold');
    this.closing = true;
    // One taken now includes whatever a capture in progress would have held.
    if (this.capturing?.timer) clearImmediate(this.capturing.timer);
    this.capturing = null;
    this.state.capture = null;
    await this.savingSnapshot;
    await this.snapshots.store.save(snapshotParts(this.state, this.journal.sequence, this.now()), this.journal.sequence, this.now());
  }

  private sendReplies(group: Group): void {
    for (const b of group.baskets) {
      // A bucket entry must not be lost to a JetStream hiccup (a publish is not acknowledged): the store retries it.
      if (this.basketStore) this.basketStore.put(b.etf, b.payload);
      else this.nc.publish(basketKvSubject(b.etf), b.payload);
    }
    this.publishNotices(group);
    for (const [subject, replies] of group.replies) this.publishReplies(subject, replies);
  }

  /**
   * In as many messages as NATS's payload limit needs (a gateway reads a batch's answers from several): a
   * publish over it throws, and here that ended the engine with every answer of the group lost (about
   * twenty 500-entry histories in one gateway batch pass 1 MB). One answer alone over it is refused as too large.
   */
  private publishReplies(subject: string, replies: EngineReply[], encodeBatch: (b: ReplyBatch) => Uint8Array = encodeRecords): void {
    const bytes = encodeBatch({ v: ENGINE_PROTOCOL_VERSION, replies });
    if (bytes.byteLength <= this.maxPayload()) return void this.nc.publish(subject, bytes);
    if (replies.length > 1) {
      const half = replies.length >> 1;
      this.publishReplies(subject, replies.slice(0, half), encodeBatch);
      this.publishReplies(subject, replies.slice(half), encodeBatch);
      return;
    }
    const { id } = replies[0]!;
    this.log.warn({ id, bytes: bytes.byteLength, maxPayload: this.nc.info?.max_payload }, 'an answer over the NATS payload limit: refused as too large');
    this.nc.publish(subject, encodeBatch({ v: ENGINE_PROTOCOL_VERSION, replies: [{ id, ok: false, error: { code: 'engine_unavailable', why: 'too_large' } }] }));
  }

  /**
   * In batches of at most `max` notices, in order (an account's changes may span two), each outcome beside its
   * change, and each under NATS's payload limit: a publish over it throws, as an answer batch's did (an account of
   * many symbols makes big changes). Smaller batches again until every one fits; a lone change over the limit is
   * left out and logged (its streams see a gap and take a snapshot).
   */
  private publishNotices(group: Group, max = MAX_BATCH_NOTICES): void {
    const limit = this.maxPayload();
    const encoded = noticeBatches(group.changes, group.outcomes, group.outcomeAfter, max).map((b) => encodeRecords(b));
    if (max > 1 && encoded.some((e) => e.byteLength > limit)) return this.publishNotices(group, Math.ceil(max / 2));
    for (const e of encoded) {
      if (e.byteLength <= limit) this.nc.publish(this.noticesSubject, e);
      else this.log.error({ bytes: e.byteLength, limit }, 'a holdings notice over the NATS payload limit: not published (streams resync at the gap)');
    }
  }

  private maxPayload(): number {
    return maxPayload(this.nc);
  }

  /**
   * A write failed, or a publish of answers (an EngineFault saying so): every group not yet answered is answered as
   * unknown, and the process stops. The answers are best effort (the bus may be what failed): a publish that throws
   * must not keep the fault, with its cause, from being reported, nor the other gateways' answers from going. Split
   * as any answers are: a refusal is larger than a read's command, so a batch of reads waiting on the write can be
   * refused in more than one message holds.
   */
  private fail(err: unknown): void {
    this.failed = true;
    const error: Rejection = { code: 'engine_unavailable', why: 'unconfirmed' };
    let unsent: { subject: string; err: string } | null = null;
    for (const g of [...this.inFlight.map((f) => f.group), ...this.groups]) {
      for (const [subject, replies] of g.replies) {
        try {
          this.publishReplies(subject, replies.map((r): EngineReply => ({ id: r.id, ok: false, error })));
        } catch (e) {
          unsent ??= { subject, err: String(e) };
        }
      }
    }
    if (unsent) this.log.error(unsent, 'answers to commands left unconfirmed could not all be sent: their gateways time out');
    this.inFlight.length = 0;
    this.groups.length = 0;
    this.groups.push(newGroup());
    this.onFatal(err);
  }
}

/** A decided conversion's outcome notice (proto/requests.ts): `deltas` and `fee` when accepted. */
function outcome(ev: Extract<JournalEvent, { t: 'conversion' | 'rejected' }>, deltas?: FlatPositions): OutcomeNotice {
  const n: OutcomeNotice = {
    request_id: requestIdString(ev.requestId),
    client_id: ev.clientId!,
    op: ev.t === 'conversion' ? ev.op : (ev.kind as OutcomeNotice['op']),
    etf: ev.etf ?? null,
    amount: ev.amount ?? 0,
    status: ev.t === 'conversion' ? 'accepted' : 'rejected',
    ts: ev.ts,
  };
  if (ev.key !== undefined) n.client_request_id = ev.key;
  if (ev.t === 'rejected') n.error = ev.error;
  if (deltas) n.deltas = deltas;
  // Set last, as the shared shape lists it (proto/records.ts); 0 too, so a reader knows not to infer it.
  if (ev.t === 'conversion') n.fee = ev.fee ?? 0;
  return n;
}

/**
 * Where a command batch came from: the command subject (gateways), the operators' read-only subject, or the
 * names subject (another engine shard reserving a roster username, proto/engine.ts `claim`).
 */
type Entry = 'command' | 'admin' | 'names';
const REPLY_PREFIX: Record<Entry, string> = { command: REPLY_SUBJECT_PREFIX, admin: ADMIN_REPLY_SUBJECT_PREFIX, names: `${inboxPrefix('engine')}.` };

/** A command other than a read on the operators' subject: refused, never decided. */
const ADMIN_REFUSAL: Decision = {
  kind: 'rejected',
  error: { code: 'forbidden', answered: [...ENGINE_ADMIN_OPS] },
  events: [],
};
