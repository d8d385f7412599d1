import { nuid, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { encodeRecords, decodeRecords, decodeAs } from '../../proto/codec.js';
import {
  ENGINE_PROTOCOL_VERSION,
  engineFaultShape,
  engineReplyProblem,
  replyBatchShape,
  type EngineFault,
  type CommandBatch,
  type CommandEnvelope,
  type EngineCommand,
  type EngineReply,
  type ReplyBatch,
  type ReplyTo,
  type UnavailableCause,
} from '../../proto/engine.js';
import { adminReplySubject, ENGINE_FAULT_SUBJECT_WILDCARD, replySubject } from '../../proto/subjects.js';
import { routeOf, shardNames } from '../../proto/shards.js';
import { NextTurn } from './next-turn.js';
import { mergeShardReplies } from './shard-merge.js';
import { refusalWords } from '../../proto/messages.js';
import type { Logger } from './log.js';
import { maxPayload } from './nats.js';

export interface EngineClientOptions {
  /** The operators' read-only subject (the check tool, the operator's NATS user): a separate reply prefix too. */
  admin?: boolean;
  /** Engine shards (proto/shards.ts); default 1. */
  shards?: number;
  /** How long an operator write keeps being resent to a shard that did not answer (default: three timeouts). */
  resendMs?: number;
  /** Where unreadable answers are reported (once per kind). */
  log?: Logger;
}

/** Kinds of answer that cannot be used; each is logged the first time and counted. */
type Unreadable = 'undecodable' | 'not_a_reply_batch' | 'reply_without_id' | 'malformed_reply' | 'subscription_error';

/**
 * Operator writes every shard journals: a shard that did not answer (down,
 * restarting) is asked again until it does, so one command reaches them all.
 * Safe to resend: the same halt, resume or rules again leave the same state,
 * and a basket already in force makes no new version.
 */
const RESENT_TO_SHARDS: ReadonlySet<EngineCommand['op']> = new Set(['halt', 'resume', 'set_rules', 'set_basket']);
const RESEND_PAUSE_MS = 200;
/**
 * A command sent again after "no responders" and still out at its deadline
 * waits this much longer for that send's outcome: "no responders" then means
 * nothing was done (not_delivered), where the deadline alone could only say
 * the outcome is unknown (timeout).
 */
const RESEND_GRACE_MS = 1_000;

/** The client's own refusals, worded at once: it is the gateway's edge, and they never pass the engine. */
const unavailable = (why: UnavailableCause) => refusalWords({ code: 'engine_unavailable', why });

/** A batch sent to a shard, until every command in it is answered (or expired). */
interface SentBatch {
  line: ShardLine;
  left: number;
  sentAt: number;
  /** Its number, the last token of its reply subject: an answer that cannot be read still says which batch it was. */
  no: number;
  ids: number[];
}

/** One shard's commands: those waiting to go, and the batches out. */
interface ShardLine {
  subject: string;
  queue: CommandEnvelope[];
  out: SentBatch[];
  timer: NodeJS.Timeout | null;
}

/**
 * Batches out per shard before the next waits. While they are answered the
 * next batch fills, so under load batches (and the engine's group commits)
 * grow instead of the same commands going out as many small messages, each a
 * system call and a message for the gateway, the server and the engine. Two,
 * not one: the gateway parses and answers one batch's requests while the
 * engine works on the other's (measured: docs/scale-plan.md, "Batches out").
 */
export const BATCHES_OUT = 2;
/** A batch unanswered this long no longer holds the next one back: a slow engine costs this much latency at most. */
const HOLD_MS = 5;

/** What a settled command's resolver and envelope become: its caller's own are dropped (EngineClient.settle). */
const SETTLED = (): void => {};
const SETTLED_ENVELOPE: CommandEnvelope = { id: 0, cmd: { op: 'ping' } };

interface Pending {
  resolve: (r: EngineReply) => void;
  deadline: number;
  batch?: SentBatch;
  /** False once nobody can receive the answer (the HTTP connection closed): the command is then never sent. */
  live?: () => boolean;
  /** The command as sent: sent again when the NATS server said no engine took it. */
  env: CommandEnvelope;
  /** Its last send reached no engine (no responders): at its deadline, nothing was done. */
  undelivered?: boolean;
  /** Answered at once when no engine takes it, never sent again (CallOptions.waitForEngine false). */
  failFast?: boolean;
}

export interface CallOptions {
  /** False once nobody can receive the answer (the HTTP connection closed): the command is then never sent. */
  live?: () => boolean;
  /**
   * Default true: a command no engine took (restarting) is sent again until
   * one does or its deadline. False for a probe whose answer is whether an
   * engine is there (GET /health, a metrics scrape): it is answered at once.
   */
  waitForEngine?: boolean;
}

/**
 * Asks the engine. Commands travel in batches, one NATS message each with
 * this gateway's own reply subject: every command issued in one event-loop
 * turn, and under load every command issued while the shard's last batch was
 * being answered (BATCHES_OUT, HOLD_MS). One subscription takes all replies:
 * no per-request inbox, no per-request timer (one sweep handles deadlines;
 * pending is in issue order, so it stops early).
 */
export class EngineClient {
  private readonly inbox: string;
  private readonly pending = new Map<number, Pending>();
  private readonly lines: ShardLine[];
  private nextId = 1;
  private readonly batch = new NextTurn(() => this.flush());
  private readonly sub: Subscription;
  private readonly sweeper: NodeJS.Timeout;
  private readonly resendMs: number;
  /** Batches with commands not yet answered, by number. */
  private readonly batches = new Map<number, SentBatch>();
  private nextBatch = 1;
  private readonly log: Logger | undefined;
  /** Answers that could not be used, by kind. */
  readonly unreadable: Partial<Record<Unreadable, number>> = {};
  /** The last fault each engine shard reported as it exited (proto/engine.ts EngineFault), for /health. */
  readonly faults = new Map<number, EngineFault>();
  private readonly faultSub: Subscription | null;
  /** Since when sends have met no engine (logged once per outage), or null. */
  private noEngineSince: number | null = null;
  /** Batches waiting to be sent again (no responders), cleared on close. */
  private readonly resends = new Set<NodeJS.Timeout>();
  private closed = false;
  /** The last send was refused by the NATS client (connection closed or draining): logged once until one goes out. */
  private sendRefused = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs: number,
    opts: EngineClientOptions = {},
  ) {
    const shards = opts.shards ?? 1;
    this.resendMs = opts.resendMs ?? 3 * timeoutMs;
    this.lines = Array.from({ length: shards }, (_, k) => {
      const names = shardNames(k, shards);
      return { subject: opts.admin ? names.admin : names.command, queue: [], out: [], timer: null };
    });
    this.log = opts.log;
    this.inbox = opts.admin ? adminReplySubject(nuid.next()) : replySubject(nuid.next());
    this.sub = nc.subscribe(`${this.inbox}.*`, {
      callback: (err, msg) => {
        if (err) return this.report('subscription_error', { err: String(err) });
        this.onReply(msg);
      },
    });
    // The gateway's /health shows them; the operators' read-only client has no use for them (nor the permission).
    this.faultSub = opts.admin ? null : nc.subscribe(ENGINE_FAULT_SUBJECT_WILDCARD, {
      callback: (err, msg) => {
        if (err) return this.report('subscription_error', { err: String(err) });
        try {
          const f = decodeAs(msg.data, engineFaultShape);
          this.faults.set(f.shard, f);
        } catch (e) {
          this.report('undecodable', { subject: msg.subject, err: String(e) });
        }
      },
    });
    this.sweeper = setInterval(() => this.expire(), Math.min(250, timeoutMs));
    this.sweeper.unref();
  }

  /** One answer message: a batch may be answered in several (the engine's group commits can split it). */
  private onReply(msg: Msg): void {
    if (msg.data.byteLength === 0 && msg.headers?.code === 503) return this.undelivered(msg);
    let batch: ReplyBatch;
    try {
      batch = decodeRecords<ReplyBatch>(msg.data);
    } catch (err) {
      return this.unusable(msg, 'undecodable', String(err));
    }
    const bad = replyBatchShape.problem(batch);
    if (bad !== null) return this.unusable(msg, 'not_a_reply_batch', bad);
    for (const r of batch.replies) {
      if (typeof r?.id !== 'number') {
        this.report('reply_without_id', { subject: msg.subject });
        continue;
      }
      const p = this.pending.get(r.id);
      if (!p) continue; // answered after its deadline: the caller already got a 503
      const malformed = engineReplyProblem(r);
      if (malformed !== null) {
        // Its id is readable, the rest not: that caller learns its answer could not be read, not a wrong one.
        this.report('malformed_reply', { subject: msg.subject, detail: malformed });
        this.settle(r.id, p, { id: r.id, ok: false, error: unavailable('unreadable') });
        continue;
      }
      if (this.noEngineSince !== null) {
        this.log?.info({ after_ms: Date.now() - this.noEngineSince }, 'an engine is taking commands again');
        this.noEngineSince = null;
      }
      this.settle(r.id, p, r);
    }
  }

  /**
   * The NATS server's "no responders": no engine was subscribed (restarting,
   * or in a cluster its subscription not yet known to this node), so none of
   * the batch was delivered and sending it again cannot do anything twice. It
   * is sent again after a pause until an engine takes it or its deadline.
   */
  private undelivered(msg: Msg): void {
    const b = this.batchOf(msg.subject);
    if (!b) return;
    this.batches.delete(b.no);
    const i = b.line.out.indexOf(b);
    if (i >= 0) b.line.out.splice(i, 1);
    const again: Pending[] = [];
    const now = Date.now();
    for (const id of b.ids) {
      const p = this.pending.get(id);
      if (!p || p.batch !== b) continue;
      delete p.batch;
      p.undelivered = true;
      // A probe, or a command whose deadline comes before another send could: nothing was done, said now.
      if (p.failFast || p.deadline <= now + RESEND_PAUSE_MS) {
        this.settle(id, p, { id, ok: false, error: unavailable('not_delivered') });
        continue;
      }
      again.push(p);
    }
    if (again.length === 0) return;
    if (this.noEngineSince === null) {
      this.noEngineSince = now;
      this.log?.warn({ subject: b.line.subject }, 'no engine is taking commands: they are sent again until one does or their deadline');
    }
    const timer = setTimeout(() => {
      this.resends.delete(timer);
      for (const p of again) if (this.pending.get(p.env.id) === p) b.line.queue.push(p.env);
      // Now, not next turn: a deadline swept in between would leave a queued command without its pending entry.
      this.flush();
    }, RESEND_PAUSE_MS);
    this.resends.add(timer);
  }

  /** An answer that cannot be read: its batch's commands fail at once, with a reason, instead of at their deadline. */
  private unusable(msg: Msg, kind: Unreadable, detail: string): void {
    this.report(kind, { subject: msg.subject, bytes: msg.data.byteLength, detail });
    const b = this.batchOf(msg.subject);
    if (b) this.failBatch(b, 'unreadable');
  }

  private batchOf(subject: string): SentBatch | undefined {
    return this.batches.get(Number(subject.slice(this.inbox.length + 1)));
  }

  private failBatch(b: SentBatch, why: UnavailableCause): void {
    for (const id of b.ids) {
      const p = this.pending.get(id);
      if (!p || p.batch !== b) continue;
      this.settle(id, p, { id, ok: false, error: unavailable(why) });
    }
  }

  /** Logged the first time per kind (a flood of bad answers is one line), counted always. */
  private report(kind: Unreadable, detail: Record<string, unknown>): void {
    const n = (this.unreadable[kind] = (this.unreadable[kind] ?? 0) + 1);
    if (n === 1) this.log?.error({ kind, ...detail }, 'unusable answer from the engine (further ones of this kind are only counted)');
  }

  /** Engine shards this client asks. */
  get shards(): number {
    return this.lines.length;
  }

  /**
   * Each shard's own answer to `cmd`, in shard order, each asked again until it answers (as operator writes are,
   * RESENT_TO_SHARDS): for a decision that needs what every shard holds, where `call` merges them into one.
   */
  eachShard<C extends EngineCommand>(cmd: C, opts: CallOptions = {}): Promise<ReplyTo<C>[]> {
    return Promise.all(this.lines.map((_, k) => this.sendUntilAnswered(k, cmd, opts)));
  }

  /** The engine's answer to `cmd`, its result typed by the command (proto/engine.ts ResultByOp). */
  call<C extends EngineCommand>(cmd: C, live?: () => boolean, opts: Omit<CallOptions, 'live'> = {}): Promise<ReplyTo<C>> {
    const o: CallOptions = live ? { ...opts, live } : opts;
    const route = routeOf(cmd, this.lines.length);
    if (route.to === 'one') return this.send(route.shard, cmd, o);
    // Asked of every shard; the answers combine into one (src/shared/shard-merge.ts).
    const ask = route.to === 'all' && RESENT_TO_SHARDS.has(cmd.op) ? (k: number) => this.sendUntilAnswered(k, cmd, o) : (k: number) => this.send(k, cmd, o);
    return Promise.all(this.lines.map((_, k) => ask(k))).then((replies) => mergeShardReplies(cmd, route, replies));
  }

  private async sendUntilAnswered<C extends EngineCommand>(shard: number, cmd: C, opts: CallOptions): Promise<ReplyTo<C>> {
    const until = Date.now() + this.resendMs;
    for (;;) {
      const reply = await this.send(shard, cmd, opts);
      if (reply.ok || reply.error.code !== 'engine_unavailable' || Date.now() >= until || (opts.live && !opts.live())) return reply;
      await new Promise((r) => setTimeout(r, RESEND_PAUSE_MS));
    }
  }

  private send<C extends EngineCommand>(shard: number, cmd: C, { live, waitForEngine = true }: CallOptions): Promise<ReplyTo<C>> {
    const id = this.nextId++;
    const env: CommandEnvelope = { id, cmd };
    this.lines[shard]!.queue.push(env);
    this.batch.schedule();
    // The engine answers each op with that op's result: the one place the wire's union is narrowed.
    return new Promise((resolve) =>
      this.pending.set(id, { resolve: resolve as (r: EngineReply) => void, deadline: Date.now() + this.timeoutMs, env, ...(live ? { live } : {}), ...(waitForEngine ? {} : { failFast: true }) }),
    );
  }

  private flush(): void {
    if (this.closed) return;
    const now = performance.now();
    for (const line of this.lines) {
      if (line.queue.length === 0) continue;
      while (line.out.length > 0 && now - line.out[0]!.sentAt >= HOLD_MS) line.out.shift();
      if (line.out.length >= BATCHES_OUT) {
        line.timer ??= setTimeout(() => {
          line.timer = null;
          this.flush();
        }, line.out[0]!.sentAt + HOLD_MS - now);
        continue;
      }
      if (line.timer) clearTimeout(line.timer);
      line.timer = null;
      const queued = line.queue;
      line.queue = [];
      this.publish(line, queued, now);
    }
  }

  /**
   * A command's one answer: out of `pending`, its batch counted, its caller
   * answered, and then nothing of the caller kept. V8 leaves the entries a Map
   * holds when it rehashes in the table it leaves behind, and a long-lived
   * Map's tables are allocated in old space: until the next full GC, such a
   * stale entry kept the caller's resolver, liveness check and command, and
   * through them the whole HTTP request, alive through every scavenge. In a
   * loaded gateway that was 14% of all young allocation surviving and
   * promoted, and scavenges of 6-8 ms instead of ~2 (docs/scale-plan.md, "A
   * Map's stale entries").
   */
  private settle(id: number, p: Pending, reply: EngineReply): void {
    this.pending.delete(id);
    this.answered(p);
    const resolve = p.resolve;
    p.resolve = SETTLED;
    p.env = SETTLED_ENVELOPE;
    p.live = undefined;
    p.batch = undefined;
    resolve(reply);
  }

  /** One command of a batch answered (or expired): the last one lets the next batch go. */
  private answered(p: Pending): void {
    const b = p.batch;
    if (!b || --b.left > 0) return;
    this.batches.delete(b.no);
    const i = b.line.out.indexOf(b);
    if (i < 0) return;
    b.line.out.splice(i, 1);
    if (b.line.queue.length > 0) this.batch.schedule();
  }

  private publish(line: ShardLine, queued: CommandEnvelope[], now: number): void {
    const cmds = queued.filter((c) => {
      const p = this.pending.get(c.id);
      // Expired or answered while it waited: its caller has its answer already, nothing is sent.
      if (!p) return false;
      if (!p.live || p.live()) return true;
      // Work whose answer can reach no one is not done: its caller learns nothing, so nothing may change.
      this.settle(c.id, p, { id: c.id, ok: false, error: unavailable('withdrawn') });
      return false;
    });
    if (cmds.length === 0) return;
    this.sendBatch(line, cmds, now);
  }

  /**
   * In as many messages as the server's max_payload needs, as the engine's answers go (EngineActor.publishReplies).
   * A publish the NATS client refuses throws, and this runs in a next-turn or timer callback: many big commands in
   * one turn, or a connection closed or draining, ended the gateway with every request in flight.
   */
  private sendBatch(line: ShardLine, cmds: CommandEnvelope[], now: number): void {
    const bytes = encodeRecords({ v: ENGINE_PROTOCOL_VERSION, cmds } satisfies CommandBatch);
    const limit = maxPayload(this.nc);
    if (bytes.byteLength > limit) {
      if (cmds.length > 1) {
        const half = cmds.length >> 1;
        this.sendBatch(line, cmds.slice(0, half), now);
        this.sendBatch(line, cmds.slice(half), now);
        return;
      }
      // No message can carry it: sent again it would be refused again, so it is a refusal of the request (413), not an outage.
      const { id, cmd } = cmds[0]!;
      this.log?.warn({ op: cmd.op, bytes: bytes.byteLength, limit }, 'a command over the NATS payload limit: refused as too large, not sent');
      this.settle(id, this.pending.get(id)!, { id, ok: false, error: refusalWords({ code: 'payload_too_large', bytes: bytes.byteLength, limit }) });
      return;
    }
    const sent: SentBatch = { line, left: cmds.length, sentAt: now, no: this.nextBatch++, ids: cmds.map((c) => c.id) };
    for (const c of cmds) this.pending.get(c.id)!.batch = sent;
    line.out.push(sent);
    this.batches.set(sent.no, sent);
    try {
      this.nc.publish(line.subject, bytes, { reply: `${this.inbox}.${sent.no}` });
    } catch (err) {
      // Refused before a byte was written (closed, draining): no engine can have it, so nothing was done. A closed
      // connection never reopens, so waiting for an engine as after "no responders" would only delay the same answer.
      if (!this.sendRefused) this.log?.error({ subject: line.subject, commands: cmds.length, err: String(err) }, 'commands could not be sent to the engine: answered as not delivered');
      this.sendRefused = true;
      this.failBatch(sent, 'not_delivered');
      return;
    }
    this.sendRefused = false;
  }

  private expire(): void {
    const now = Date.now();
    for (const [id, p] of this.pending) {
      if (p.deadline > now) break;
      // Sent again after "no responders" and out now: its outcome (nothing done, or done) comes soon.
      if (p.undelivered && p.batch && now < p.deadline + RESEND_GRACE_MS) continue;
      this.settle(id, p, { id, ok: false, error: unavailable(p.undelivered && !p.batch ? 'not_delivered' : 'timeout') });
    }
  }

  close(): void {
    this.closed = true;
    for (const t of this.resends) clearTimeout(t);
    clearInterval(this.sweeper);
    for (const line of this.lines) if (line.timer) clearTimeout(line.timer);
    this.sub.unsubscribe();
    this.faultSub?.unsubscribe();
    // Nothing more will be sent or answered: every caller learns so now, not never.
    for (const [id, p] of this.pending) this.settle(id, p, { id, ok: false, error: unavailable(p.batch ? 'timeout' : 'not_delivered') });
  }
}
