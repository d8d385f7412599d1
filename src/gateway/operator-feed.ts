import { errors, nuid, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { z } from 'zod';
import { decodeAs, encode, MalformedMessage } from '../../proto/codec.js';
import { FEED_CONTROL_REPLY_PREFIX, FEED_CONTROL_SUBJECT, feedControlReplyShape, type FeedControlReply, type FeedControlRequest } from '../../proto/feed.js';
import { FEED_ALERT_SUBJECT, feedAlertShape, type FeedAlert } from '../../proto/marketdata.js';
import { OPERATOR_ALERTS_KEPT, OPERATOR_ROUTES } from '../../proto/operator.js';
import type { HttpCall } from './http.js';
import { invalidParameter, type OperatorContext, type OperatorRoutes } from './operator-routes.js';

const verdictParams = z.object({
  id: z.string({ error: 'id: the verdict id (a feed problem\'s id) is required' }).min(1).max(100),
  decision: z.enum(['confirm', 'reject'], { error: 'decision: confirm or reject' }),
});
const ackParams = z.object({ id: z.string().min(1).max(100).optional() });

/** The feed bridge's alerts since the gateway started, newest first: the bridge publishes them and keeps none. */
export function feedAlerts(nc: NatsConnection): { list: FeedAlert[]; close(): void } {
  const list: FeedAlert[] = [];
  const sub: Subscription = nc.subscribe(FEED_ALERT_SUBJECT, {
    callback: (err, msg) => {
      if (err) return;
      try {
        const a = decodeAs(msg.data, feedAlertShape);
        if (typeof a?.kind !== 'string') return;
        list.unshift(a);
        if (list.length > OPERATOR_ALERTS_KEPT) list.pop();
      } catch {
        /* an undecodable alert is not worth an alert */
      }
    },
  });
  return { list, close: () => sub.unsubscribe() };
}

/** The operator's decisions go to the feed bridge, which alone holds the feeds' state (proto/feed.ts). */
async function feedControl(ctx: OperatorContext, ex: HttpCall, req: FeedControlRequest): Promise<void> {
  let reply: FeedControlReply;
  try {
    const m = await ctx.deps.nc.request(FEED_CONTROL_SUBJECT, encode(req), { timeout: 3000, noMux: true, reply: `${FEED_CONTROL_REPLY_PREFIX}${nuid.next()}` });
    reply = decodeAs(m.data, feedControlReplyShape);
  } catch (err) {
    // No responders or a timeout: the bridge is down or busy; nothing was decided.
    if (err instanceof errors.NoRespondersError || err instanceof errors.TimeoutError || err instanceof errors.RequestError) {
      return ex.json(503, { error: { code: 'feed_unavailable', message: 'the feed bridge did not answer: nothing was decided' } });
    }
    // Something answered, but not as the bridge does: whether anything was decided, the bridge's problems (overview) show.
    if (err instanceof MalformedMessage) {
      ctx.log.warn({ op: req.op, problem: err.problem }, 'feed control answer not of its shape');
      return ex.json(503, { error: { code: 'feed_unavailable', message: `the feed bridge's answer could not be read (${err.problem}): see the feed's problems for what stands` } });
    }
    throw err;
  }
  if (!reply.ok) return ex.error(reply.code, reply.message);
  ctx.log.warn({ op: req.op, id: req.id, done: reply.done, by: ctx.by }, 'operator feed decision');
  ex.json(200, { done: reply.done, problems: reply.problems });
}

/** The feed: its alerts, and the operator's verdicts on and acknowledgements of its problems. */
export function feedRoutes(ctx: OperatorContext, alerts: readonly FeedAlert[]): OperatorRoutes {
  return {
    [OPERATOR_ROUTES.alerts]: { GET: async (ex) => ex.json(200, { alerts }) },
    [OPERATOR_ROUTES.feedVerdict]: {
      POST: async (ex, p) => {
        const parsed = verdictParams.safeParse(p);
        if (!parsed.success) return invalidParameter(ex, parsed.error);
        await feedControl(ctx, ex, { v: 1, op: 'verdict', id: parsed.data.id, decision: parsed.data.decision, by: ctx.by });
      },
    },
    [OPERATOR_ROUTES.feedAck]: {
      POST: async (ex, p) => {
        const parsed = ackParams.safeParse(p);
        if (!parsed.success) return invalidParameter(ex, parsed.error);
        await feedControl(ctx, ex, { v: 1, op: 'ack', id: parsed.data.id ?? 'all', by: ctx.by });
      },
    },
  };
}
