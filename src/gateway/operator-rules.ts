import { z } from 'zod';
import { OPERATOR_ROUTES } from '../../proto/operator.js';
import { conversionRulesSchema } from '../../proto/rules.js';
import { invalidParameter, operatorCommand, type OperatorContext, type OperatorRoutes } from './operator-routes.js';

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

/** A new basket version for an ETF, in force from a given time (default now). */
export function basketRoutes(ctx: OperatorContext): OperatorRoutes {
  return {
    [OPERATOR_ROUTES.basket]: {
      POST: async (ex, p) => {
        const parsed = basketParams.safeParse(p);
        if (!parsed.success) return invalidParameter(ex, parsed.error, '');
        const { etf_name, components, from } = parsed.data;
        await operatorCommand(ctx, ex, { op: 'set_basket', etf: etf_name, components, from: from ?? Date.now(), by: ctx.by });
      },
    },
  };
}
