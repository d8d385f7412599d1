import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { decode } from '../../proto/codec.js';
import { FEED_CONTROL_REPLY_PREFIX, FEED_CONTROL_SUBJECT, type FeedControlReply, type FeedControlRequest } from '../../proto/feed.js';
import type { Logger } from '../shared/log.js';
import { publishQuiet } from './nats-out.js';
import type { ProblemBook } from './problems.js';
import type { SessionVerdict } from './session-verdict.js';

/** Under the gateway's wait for the bridge's answer. */
const MARK_WAIT_MS = 2000;

/** The operator's requests (decide a verdict, acknowledge problems), answered on NATS. */
export class ControlChannel {
  private sub: Subscription | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    private readonly answer: (data: Uint8Array) => FeedControlReply,
    /** After a request that changed something: status and problems go out at once, not at the next tick. */
    private readonly changed: () => void,
    /** Resolves once what a decision began is stored (SessionVerdict.marked): the answer waits for it, at most MARK_WAIT_MS. */
    private readonly stored: () => Promise<void> = () => Promise.resolve(),
  ) {}

  start(): void {
    this.sub = this.nc.subscribe(FEED_CONTROL_SUBJECT, {
      callback: (err, msg) => {
        if (err) return;
        const reply = this.answer(msg.data);
        if (reply.ok) this.changed();
        const answer = () => {
          // The feed role may answer only under FEED_CONTROL_REPLY_PREFIX (proto/roles.ts).
          if (msg.reply?.startsWith(FEED_CONTROL_REPLY_PREFIX)) publishQuiet(this.nc, this.log, msg.reply, reply);
        };
        // "Done" once a stop can no longer undo it; a store that does not answer in time is logged, and the decision stands in memory.
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(true), MARK_WAIT_MS)));
        void Promise.race([this.stored().then(() => false), late]).then((tooLate) => {
          clearTimeout(timer);
          if (tooLate) this.log.warn({ waitedMs: MARK_WAIT_MS }, 'a decision answered before it was stored: a bridge stop now would bring the verdict back');
          answer();
        });
      },
    });
  }

  stop(): void {
    this.sub?.unsubscribe();
  }
}

/** Answers one control request; no I/O: the verdict and the problems change in place. */
export function answerControl(data: Uint8Array, verdict: SessionVerdict, problems: ProblemBook, log: Logger, now = Date.now()): FeedControlReply {
  let r: Partial<FeedControlRequest> & { decision?: unknown };
  try {
    r = decode<Partial<FeedControlRequest>>(data) ?? {};
  } catch {
    return { ok: false, code: 'invalid_parameter', message: 'undecodable request' };
  }
  const by = typeof r.by === 'string' ? r.by.slice(0, 64) : 'operator';
  if (typeof r.id !== 'string' || r.id === '') return { ok: false, code: 'invalid_parameter', message: 'id: a problem id is required' };
  if (r.op === 'verdict') {
    if (r.decision !== 'confirm' && r.decision !== 'reject') return { ok: false, code: 'invalid_parameter', message: 'decision: confirm or reject' };
    if (!verdict.waits(r.id)) return { ok: false, code: 'not_found', message: `no verdict ${r.id} waits for a decision` };
    log.warn({ verdict: r.id, decision: r.decision, by }, 'operator decided an exchange session verdict');
    verdict.decide(r.id, r.decision, by, now);
    return { ok: true, done: [r.id], problems: problems.list() };
  }
  if (r.op === 'ack') {
    const live = verdict.dropRejected(r.id, by, now);
    const done = problems.ack(r.id);
    if (done.length === 0 && !live) return { ok: false, code: 'not_found', message: r.id === 'all' ? 'no problem to acknowledge' : `no problem ${r.id} to acknowledge (pending verdicts take confirm or reject)` };
    log.info({ ids: done, by }, 'operator acknowledged feed problems');
    return { ok: true, done: live ? [r.id, ...done.filter((x) => x !== r.id)] : done, problems: problems.list() };
  }
  return { ok: false, code: 'invalid_parameter', message: 'op: verdict or ack' };
}
