import type { NatsConnection } from '@nats-io/transport-node';
import type { z } from 'zod';
import type { EngineCommand, EngineReply, TickerOf } from '../../proto/engine.js';
import { refusalWords } from '../../proto/messages.js';
import type { Logger } from '../shared/log.js';
import type { EngineClient } from '../shared/engine-client.js';
import type { FeedStatusView } from './feed-status.js';
import type { PricingStatusView } from './pricing-status.js';
import type { HttpCall } from './http.js';
import type { Marks } from '../shared/marks.js';
import type { GatewayMetrics } from './metrics.js';
import type { Params } from './params.js';
import type { Throttle } from './throttle.js';
import type { HubStats } from './ws/hub.js';

export interface OperatorDeps {
  nc: NatsConnection;
  engine: EngineClient;
  feed: FeedStatusView;
  pricing: PricingStatusView;
  ws: () => HubStats;
  metrics: GatewayMetrics;
  /** Mid prices, for each team's P&L. */
  marks: Marks;
  /** Failed operator sign-ins count like failed team logins (per host, per username). */
  throttle?: Throttle;
}

/** What every group of operator routes works with. */
export interface OperatorContext {
  deps: OperatorDeps;
  log: Logger;
  /** The signed-in operator's name: every write is journaled with it. */
  by: string;
  tickerOf: TickerOf;
  /** A ticker's symbol (upper case; a symbol id as digits too), as the engine reads basket components. */
  symbolOf: (ticker: string) => number | undefined;
}

/** One operator path: a read (GET, no body) and at most one write, whose parameters come from the query and body. */
export interface OperatorRoute {
  GET?: (ex: HttpCall) => Promise<void>;
  PUT?: (ex: HttpCall, params: Params) => Promise<void>;
  POST?: (ex: HttpCall, params: Params) => Promise<void>;
}

export type OperatorRoutes = Record<string, OperatorRoute>;

/** The methods a path takes, reads first: what a 405 lists. */
export const routeMethods = (route: OperatorRoute | undefined): string[] =>
  route ? (['GET', 'PUT', 'POST'] as const).filter((m) => route[m]) : [];

/** Writes go through the engine like any command: journaled with the operator's name and the time. */
export async function operatorCommand(ctx: OperatorContext, ex: HttpCall, cmd: EngineCommand): Promise<void> {
  const reply = await ctx.deps.engine.call(cmd);
  if (!reply.ok) return refused(ctx, ex, reply);
  ex.json(200, reply.result);
}

/** The engine's refusal (or its absence: a 503), in words. */
export function refused(ctx: OperatorContext, ex: HttpCall, reply: EngineReply & { ok: false }): void {
  const { code, message, ...extra } = refusalWords(reply.error, ctx.tickerOf);
  ex.error(code, message, extra);
}

/**
 * A 400 naming the first bad parameter. `withPath`: the message starts with
 * the parameter's path, for schemas whose own messages do not name it.
 */
export function invalidParameter(ex: HttpCall, error: z.ZodError, withPath?: string): void {
  const issue = error.issues[0]!;
  const message = withPath === undefined ? issue.message : `${issue.path.join('.') || withPath}: ${issue.message}`;
  ex.error('invalid_parameter', message, { field: String(issue.path[0] ?? '') });
}
