import type { NatsConnection, Msg, Subscription } from '@nats-io/transport-node';
import { encode, decode } from '../../proto/codec.js';
import {
  ENGINE_PROTOCOL_VERSION,
  type CommandBatch,
  type EngineReply,
  type ReplyBatch,
} from '../../proto/engine.js';
import type { Delta, JournalEvent } from '../../proto/journal.js';
import { HOLDINGS_NOTICE_VERSION, type HoldingsChange, type HoldingsNotice } from '../../proto/holdings.js';
import type { Fill } from '../../proto/fill.js';
import {
  ADMIN_REPLY_SUBJECT_PREFIX,
  ENGINE_ADMIN_OPS,
  REPLY_SUBJECT_PREFIX,
  holdingsSubject,
} from '../../proto/subjects.js';
import type { Logger } from '../shared/log.js';
import { decide, applyEvent, accountPositions, basketVersions, flatDeltas, requestIdString, type CoreConfig, type Decision } from './core.js';
import { basketKvSubject, type BasketVersions } from '../../proto/marketdata.js';
import { OUTCOME_NOTICE_VERSION, requestsSubject, type OutcomeNotice } from '../../proto/requests.js';
import type { DumpResult, FlatPositions } from '../../proto/engine.js';
import type { Account, EngineState } from './state.js';
import type { JournalWriter } from './journal.js';
import { takeSnapshot, type SnapshotStore } from './snapshot.js';
import { NextTurn } from '../shared/next-turn.js';
import { shardNames, type ShardNames } from '../../proto/shards.js';

export interface SnapshotPolicy {
  store: SnapshotStore;
  /** Journaled events between snapshots; bounds the replay at start-up. */
  every: number;
}

/** Events per journal message: keeps one group commit well under NATS's 1 MB payload limit. */
const MAX_GROUP_EVENTS = 2000;

interface Group {
  events: JournalEvent[];
  /** reply subject → replies released once the group is durable */
  replies: Map<string, EngineReply[]>;
  /** Holdings changes and request outcomes, published in apply order once the group is durable; `kvKey`: an entry of the baskets bucket. */
  notices: { subject: string; payload: Uint8Array; kvKey?: string }[];
}

const newGroup = (): Group => ({ events: [], replies: new Map(), notices: [] });
const isEmpty = (g: Group) => g.events.length === 0 && g.replies.size === 0 && g.notices.length === 0;

/**
 * The single writer. Commands are decided and applied synchronously in
 * arrival order; their events are committed in groups (one journal write for
 * every command that arrived while the previous write was in flight), and no
 * reply, read or write, leaves before everything it could have observed is
 * durable. A failed journal write stops the process: its in-memory state may
 * be ahead of the journal, and a restart rebuilds it from the journal.
 */
export class EngineActor {
  private readonly groups: Group[] = [newGroup()];
  private writing = false;
  /** Whether the group being written has events (it is off `groups` while in flight). */
  private writingEvents = false;
  // The next turn, not a microtask: lets every batch already read from the socket join this group.
  private readonly nextGroup = new NextTurn(() => void this.flush());
  private subs: Subscription[] = [];
  private eventsSinceSnapshot = 0;
  /** A snapshot taken from state that includes groups not yet written: saved once the journal reaches `journalSeq`. */
  private pendingSnapshot: { journalSeq: number; bytes: Uint8Array } | null = null;
  private savingSnapshot: Promise<void> | null = null;

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
  ) {}

  /** Subscribes, and resolves once the server has the subscription: "ready" must mean a request sent now is heard. */
  async start(names: ShardNames = shardNames(0, 1)): Promise<void> {
    const subscribe = (subject: string, admin: boolean) =>
      this.nc.subscribe(subject, {
        queue: names.queue,
        callback: (err, msg) => {
          if (err) return this.log.error({ err, subject }, 'command subscription error');
          this.onBatch(msg, admin);
        },
      });
    this.subs = [subscribe(names.command, false), subscribe(names.admin, true)];
    await this.nc.flush();
  }

  /** Stops taking commands and waits for every accepted one to be durable and answered. */
  async drain(): Promise<void> {
    for (const sub of this.subs) sub.unsubscribe();
    while (this.writing || this.groups.some((g) => !isEmpty(g))) {
      if (!this.writing) await this.flush();
      else await new Promise((r) => setImmediate(r));
    }
  }

  /** `admin`: from ENGINE_ADMIN_SUBJECT, where only reads (ENGINE_ADMIN_OPS) are answered. */
  private onBatch(msg: Msg, admin: boolean): void {
    // Answers go only where answers belong: a reply subject of another kind (a stream's, say) is never written.
    if (!msg.reply?.startsWith(admin ? ADMIN_REPLY_SUBJECT_PREFIX : REPLY_SUBJECT_PREFIX)) {
      this.log.warn({ reply: msg.reply, subject: msg.subject }, 'command batch without a proper reply subject ignored');
      return;
    }
    let batch: CommandBatch;
    try {
      batch = decode<CommandBatch>(msg.data);
    } catch (err) {
      this.log.warn({ err }, 'undecodable command batch');
      return;
    }
    if (batch?.v !== ENGINE_PROTOCOL_VERSION || !Array.isArray(batch.cmds)) {
      const error = { code: 'unsupported_version' as const, message: `engine speaks protocol v${ENGINE_PROTOCOL_VERSION}` };
      const replies = (batch?.cmds ?? []).map((c): EngineReply => ({ id: c.id, ok: false, error }));
      msg.respond(encode({ v: ENGINE_PROTOCOL_VERSION, replies } satisfies ReplyBatch));
      return;
    }
    const now = this.now();
    for (const { id, cmd } of batch.cmds) {
      let reply: EngineReply | undefined;
      let decision: Decision | undefined;
      let events: JournalEvent[] = [];
      try {
        if (admin && !ENGINE_ADMIN_OPS.has((cmd as { op?: string })?.op ?? '')) {
          throw new AdminRefusal();
        }
        const d = (decision = decide(this.state, this.cfg, cmd, now));
        events = d.events;
        if (cmd.op === 'dump' && d.result) {
          // The state already holds the events of groups not yet written: name the journal sequence it will be the replay of.
          (d.result as DumpResult).journal_seq = this.stateJournalSeq();
        }
      } catch (err) {
        if (err instanceof AdminRefusal) {
          reply = { id, ok: false, error: { code: 'forbidden', message: `only ${[...ENGINE_ADMIN_OPS].join(', ')} are answered on the operators' read-only subject` } };
        } else {
        // A malformed command from a buggy client must not take the engine down.
        this.log.warn({ err, op: (cmd as { op?: unknown })?.op }, 'command rejected');
        reply = { id, ok: false, error: { code: 'bad_request', message: 'malformed command' } };
        }
      }
      let group = this.groups[this.groups.length - 1]!;
      if (events.length > 0 && group.events.length + events.length > MAX_GROUP_EVENTS) {
        group = newGroup();
        this.groups.push(group);
      }
      for (const ev of events) {
        applyEvent(this.state, ev);
        // The journal keeps each conversion's positions right after it for the audit trail: taken here, at the edge, as it is applied
        // (the same frozen list the answer and the notice carry).
        if (ev.t === 'conversion' && !ev.deltas) ev.held = accountPositions(this.state.accounts.get(ev.clientId)!) as number[];
        group.events.push(ev);
        this.noticesOf(ev, group);
      }
      // Read once its events are applied: the core builds a conversion's answer only when asked, from the state after it.
      reply ??= decision!.error ? { id, ok: false, error: decision!.error } : { id, ok: true, result: decision!.result! };
      const list = group.replies.get(msg.reply);
      if (list) list.push(reply);
      else group.replies.set(msg.reply, [reply]);
    }
    this.scheduleFlush();
  }

  /**
   * A fill or session reset the feed applied. It is durable already (it is in
   * the fill stream) but its notice queues behind any conversion not yet
   * written, so every account's changes are published in seq order.
   */
  applied(acc: Account, cause: HoldingsChange['cause'], deltas: Delta[], fill?: Fill): void {
    const change = this.change(acc, cause, flatDeltas(deltas), this.now());
    if (fill) change.fill = { seq: fill.seq, price: fill.price };
    this.groups[this.groups.length - 1]!.notices.push({ subject: holdingsSubject(acc.clientId), payload: encode(change) });
    this.scheduleFlush();
  }

  private noticesOf(ev: JournalEvent, group: Group): void {
    if (ev.t === 'basket') {
      // Published state for pricing and GET /etfs, once the change is durable (a KV put is a publish into its stream).
      const versions: BasketVersions = { etf: ev.etf, versions: basketVersions(this.state, ev.etf, this.cfg.instruments) };
      group.notices.push({ subject: basketKvSubject(ev.etf), payload: encode(versions), kvKey: ev.etf });
    }
    if (ev.t === 'conversion') {
      const acc = this.state.accounts.get(ev.clientId)!;
      const deltas = this.state.catalog.flatDeltas(ev);
      group.notices.push({ subject: holdingsSubject(acc.clientId), payload: encode(this.change(acc, ev.op, deltas, ev.ts)) });
      group.notices.push({ subject: requestsSubject(ev.clientId), payload: encode(outcome(ev, deltas)) });
    }
    if (ev.t === 'rejected' && ev.kind !== 'register' && ev.clientId !== null) {
      group.notices.push({ subject: requestsSubject(ev.clientId), payload: encode(outcome(ev)) });
    }
  }

  private change(acc: Account, cause: HoldingsChange['cause'], deltas: FlatPositions, now: number): HoldingsNotice {
    return { v: HOLDINGS_NOTICE_VERSION, client_id: acc.clientId, seq: acc.version, cause, deltas, positions: accountPositions(acc), cash: acc.cash, ts: now };
  }

  private scheduleFlush(): void {
    if (!this.writing) this.nextGroup.schedule();
  }

  private async flush(): Promise<void> {
    if (this.writing) return;
    this.writing = true;
    try {
      while (!isEmpty(this.groups[0]!)) {
        const group = this.groups.shift()!;
        if (this.groups.length === 0) this.groups.push(newGroup());
        if (group.events.length > 0) {
          this.writingEvents = true;
          try {
            this.state.journalSeq = await this.journal.append(group.events);
            this.writingEvents = false;
            this.afterWrite(group.events.length);
            this.onDurable?.(group.events, this.state.journalSeq);
          } catch (err) {
            this.failGroup(group, err);
            return;
          }
        }
        this.sendReplies(group);
      }
    } finally {
      this.writing = false;
    }
  }

  /** Journal sequence the in-memory state is the replay of (groups already applied but not yet written included). */
  private stateJournalSeq(): number {
    return this.journal.sequence + (this.writingEvents ? 1 : 0) + this.groups.filter((g) => g.events.length > 0).length;
  }

  private afterWrite(events: number): void {
    if (!this.snapshots || this.snapshots.every <= 0) return;
    this.eventsSinceSnapshot += events;
    if (!this.pendingSnapshot && !this.savingSnapshot && this.eventsSinceSnapshot >= this.snapshots.every) {
      this.eventsSinceSnapshot = 0;
      const journalSeq = this.stateJournalSeq();
      this.pendingSnapshot = { journalSeq, bytes: takeSnapshot(this.state, journalSeq, this.now()) };
    }
    const pending = this.pendingSnapshot;
    if (pending && this.journal.sequence >= pending.journalSeq) {
      this.pendingSnapshot = null;
      this.savingSnapshot = this.snapshots.store
        .save(pending.bytes, pending.journalSeq, this.now())
        .then(
          () => {
            this.log.info({ journalSeq: pending.journalSeq, bytes: pending.bytes.byteLength }, 'snapshot saved');
          },
          (err: unknown) => this.log.warn({ err }, 'snapshot not saved: start-up replays more journal'),
        )
        .finally(() => (this.savingSnapshot = null));
    }
  }

  /** After drain: everything applied is durable, so the state is exactly the journal's replay. */
  async saveSnapshotNow(): Promise<void> {
    if (!this.snapshots) return;
    await this.savingSnapshot;
    await this.snapshots.store.save(takeSnapshot(this.state, this.journal.sequence, this.now()), this.journal.sequence, this.now());
  }

  private sendReplies(group: Group): void {
    for (const n of group.notices) {
      // A bucket entry must not be lost to a JetStream hiccup (a publish is not acknowledged): the store retries it.
      if (n.kvKey !== undefined && this.basketStore) this.basketStore.put(n.kvKey, n.payload);
      else this.nc.publish(n.subject, n.payload);
    }
    for (const [subject, replies] of group.replies) {
      this.nc.publish(subject, encode({ v: ENGINE_PROTOCOL_VERSION, replies } satisfies ReplyBatch));
    }
  }

  private failGroup(group: Group, err: unknown): void {
    const error = {
      code: 'engine_unavailable' as const,
      message: 'the engine could not confirm this operation was recorded; check /holdings before retrying',
    };
    for (const g of [group, ...this.groups]) {
      for (const [subject, replies] of g.replies) {
        const failed = replies.map((r): EngineReply => ({ id: r.id, ok: false, error }));
        this.nc.publish(subject, encode({ v: ENGINE_PROTOCOL_VERSION, replies: failed } satisfies ReplyBatch));
      }
    }
    this.onFatal(err);
  }
}

/** A decided conversion's outcome notice (proto/requests.ts): `deltas` when accepted. */
function outcome(ev: Extract<JournalEvent, { t: 'conversion' | 'rejected' }>, deltas?: FlatPositions): OutcomeNotice {
  const n: OutcomeNotice = {
    v: OUTCOME_NOTICE_VERSION,
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
  return n;
}

/** A command other than a read on the operators' subject. */
class AdminRefusal extends Error {}
