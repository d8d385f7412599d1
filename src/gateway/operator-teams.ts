import type { EngineReply } from '../../proto/engine.js';
import { entryWords, refusalWords } from '../../proto/messages.js';
import { OPERATOR_CONVERSIONS_SHOWN, OPERATOR_ROUTES, type OperatorAccounts, type OperatorOverview, type OperatorPricing } from '../../proto/operator.js';
import type { FeedAlert } from '../../proto/marketdata.js';
import type { HttpCall } from './http.js';
import type { OperatorContext, OperatorRoutes } from './operator-routes.js';

type Refused = EngineReply & { ok: false };

/** Every team's positions, cash and P&L, from one engine read (`dump`): the engine alone writes state. */
async function accounts(ctx: OperatorContext): Promise<OperatorAccounts | Refused> {
  const { engine, marks } = ctx.deps;
  const reply = await engine.call({ op: 'dump' });
  if (!reply.ok) return reply;
  const d = reply.result;
  return {
    journal_seq: d.journal_seq,
    fill_seq: d.fill_seq,
    accounts: d.accounts.map((a) => ({
      client_id: a.client_id,
      username: a.username,
      holdings: Object.fromEntries(a.positions.filter(([, q]) => q !== 0).map(([s, q]) => [ctx.tickerOf(s), q])),
      cash: a.cash,
      pnl: marks.pnl(a.cash, a.positions.map(([symbol, quantity]) => ({ symbol, ticker: ctx.tickerOf(symbol), quantity }))),
    })),
  };
}

async function overview(ctx: OperatorContext, alerts: readonly FeedAlert[]): Promise<OperatorOverview | Refused> {
  // The ping says which roster lines the engine refused: the instructor fixes the file from this page.
  const [acc, ping] = await Promise.all([accounts(ctx), ctx.deps.engine.call({ op: 'ping' })]);
  if ('ok' in acc) return acc;
  const refused = ping.ok ? (ping.result.roster_refused ?? []) : [];
  const scoreboard = ping.ok ? ping.result.scoreboard_failing : undefined;
  // One history read per team, all in the same engine batch; the newest across teams are kept.
  const histories = await Promise.all(
    acc.accounts.map((a) => ctx.deps.engine.call({ op: 'history', clientId: a.client_id, limit: OPERATOR_CONVERSIONS_SHOWN })),
  );
  const conversions = histories
    .flatMap((h, i) => (h.ok ? h.result.entries.map((e) => ({ ...entryWords(e, ctx.tickerOf), username: acc.accounts[i]!.username })) : []))
    .filter((e) => e.kind !== 'register')
    .sort((a, b) => Number(b.request_id.slice(1)) - Number(a.request_id.slice(1)))
    .slice(0, OPERATOR_CONVERSIONS_SHOWN);
  // An empty list must mean none: a read the engine did not answer is named, or the page showed a team's conversions, or a refused line, as never there.
  const unread = [...(ping.ok ? [] : ['roster']), ...histories.flatMap((h, i) => (h.ok ? [] : [acc.accounts[i]!.username]))];
  const ws = ctx.deps.ws();
  return {
    ...acc,
    conversions,
    feed: ctx.deps.feed.view(),
    pricing: pricingOverview(ctx),
    alerts: alerts.slice(0, 50),
    ws: { connections: ws.connections, accounts: ws.accounts, changes: ws.changes },
    ...(refused.length ? { roster_refused: refused } : {}),
    ...(scoreboard ? { scoreboard_failing: scoreboard } : {}),
    ...(unread.length ? { unread } : {}),
    ts: Date.now(),
  };
}

/** The pricing service with what /health says of it: the page lists its problems as it lists the engine's and the feed's. */
function pricingOverview(ctx: OperatorContext): OperatorPricing {
  const problems = ctx.deps.pricing.problems();
  return { ...ctx.deps.pricing.view(), ...(problems.length ? { problems } : {}) };
}

/** A read the engine could not answer is a 503 with its reason; no figure is made up. */
function answer(ctx: OperatorContext, ex: HttpCall, r: object | Refused): void {
  if ('ok' in r) {
    const { code, message } = refusalWords(r.error, ctx.tickerOf);
    return ex.json(503, { error: { code, message } });
  }
  ex.json(200, r);
}

/** The teams: the overview (positions, latest conversions, feed, WebSocket counters) and the accounts alone. */
export function teamRoutes(ctx: OperatorContext, alerts: readonly FeedAlert[]): OperatorRoutes {
  return {
    [OPERATOR_ROUTES.overview]: { GET: async (ex) => answer(ctx, ex, await overview(ctx, alerts)) },
    [OPERATOR_ROUTES.accounts]: { GET: async (ex) => answer(ctx, ex, await accounts(ctx)) },
  };
}
