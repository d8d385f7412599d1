import { z } from 'zod';
import { OPERATOR_ROUTES } from '../../proto/operator.js';
import { conversionRulesSchema } from '../../proto/rules.js';
import type { EngineReply } from '../../proto/engine.js';
import { invalidParameter, operatorCommand, refused, type OperatorContext, type OperatorRoutes } from './operator-routes.js';

const haltParams = z.object({
  etf_name: z.string().min(1).max(64).optional(),
  reason: z.string().max(200, 'reason: at most 200 characters').optional(),
});

const basketParams = z.object({
  etf_name: z.string().min(1).max(64),
  components: z.record(z.string(), z.number().int().positive()),
  from: z
    .union([z.number().int().min(0), z.iso.datetime({ offset: true }).transform((s) => Date.parse(s))])
    .optional(),
});

/** The conversion rules, halts and resumes: each write an engine command, journaled with the operator's name. */
export function rulesRoutes(ctx: OperatorContext): OperatorRoutes {
  return {
    [OPERATOR_ROUTES.rules]: {
      GET: (ex) => operatorCommand(ctx, ex, { op: 'rules' }),
      PUT: async (ex, p) => {
        // Credentials arrive among the parameters (Basic auth): they are not rules.
        const { username: _u, password: _p, request_id: _r, ...body } = p;
        const parsed = conversionRulesSchema.safeParse(body);
        if (!parsed.success) return invalidParameter(ex, parsed.error, 'rules');
        await operatorCommand(ctx, ex, { op: 'set_rules', rules: parsed.data, by: ctx.by });
      },
    },
    [OPERATOR_ROUTES.halt]: {
      POST: async (ex, p) => {
        const parsed = haltParams.safeParse(p);
        if (!parsed.success) return invalidParameter(ex, parsed.error);
        await operatorCommand(ctx, ex, { op: 'halt', etf: parsed.data.etf_name ?? null, reason: parsed.data.reason ?? '', by: ctx.by });
      },
    },
    [OPERATOR_ROUTES.resume]: {
      POST: async (ex, p) => {
        const parsed = haltParams.safeParse(p);
        if (!parsed.success) return invalidParameter(ex, parsed.error);
        await operatorCommand(ctx, ex, { op: 'resume', etf: parsed.data.etf_name ?? null, by: ctx.by });
      },
    },
  };
}

/** Components by symbol, as the engine reads them (a ticker in any case, or a symbol id); null if one names no symbol or one named before. */
function bySymbol(ctx: OperatorContext, components: Record<string, number>): Map<number, number> | null {
  const out = new Map<number, number>();
  for (const [name, weight] of Object.entries(components)) {
    const symbol = ctx.symbolOf(name.toUpperCase());
    if (symbol === undefined || out.has(symbol)) return null;
    out.set(symbol, weight);
  }
  return out;
}

const sameBasket = (a: Map<number, number>, b: Map<number, number>): boolean => a.size === b.size && [...a].every(([symbol, w]) => b.get(symbol) === w);

/**
 * When a basket change takes effect: one time on every shard. A shard that has these components in force already
 * makes no new version (proto: set_basket), so a change sent again (the retry a 503 asks for, after a shard did not
 * answer) must bring that version's time to the shards that missed it: given the retry's own (its `from`, or now,
 * chosen per request), each shard had another basket in force in between, and published its own versions. So every
 * shard says first what it has in force; one that does not answer (within the resend window) is a 503, nothing sent,
 * as a shard that never says could be the one holding the version.
 */
async function takesEffect(ctx: OperatorContext, etf: string, components: Record<string, number>, asked: number | undefined): Promise<number | (EngineReply & { ok: false })> {
  const proposed = asked ?? Date.now();
  const { engine } = ctx.deps;
  // One shard: its own no-op keeps the version's time.
  if (engine.shards === 1) return proposed;
  const wanted = bySymbol(ctx, components);
  // The engine refuses it, whatever its time.
  if (!wanted) return proposed;
  const times: number[] = [];
  for (const reply of await engine.eachShard({ op: 'rules' })) {
    if (!reply.ok) return reply;
    const last = reply.result.baskets[etf]?.at(-1);
    const held = last && bySymbol(ctx, last.components);
    if (held && sameBasket(held, wanted)) times.push(last.from);
  }
  // Shards that already disagree (changes before this rule): the earliest.
  return times.length > 0 ? Math.min(...times) : proposed;
}

/** A new basket version for an ETF, in force from a given time (default now). */
export function basketRoutes(ctx: OperatorContext): OperatorRoutes {
  return {
    [OPERATOR_ROUTES.basket]: {
      POST: async (ex, p) => {
        const parsed = basketParams.safeParse(p);
        if (!parsed.success) return invalidParameter(ex, parsed.error, '');
        const { etf_name, components, from } = parsed.data;
        const at = await takesEffect(ctx, etf_name, components, from);
        if (typeof at !== 'number') return refused(ctx, ex, at);
        await operatorCommand(ctx, ex, { op: 'set_basket', etf: etf_name, components, from: at, by: ctx.by });
      },
    },
  };
}
