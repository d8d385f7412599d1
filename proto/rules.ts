import { z } from 'zod';

/**
 * Conversion rules: every one off when absent, so the default is free,
 * unlimited, always open. They start from config (`rules` in
 * config/default.json); the operator can replace them at run time
 * (PUT /operator/api/rules), which the engine journals with who and when.
 */
const fee = z.object({ fixed: z.number().int().min(0), per_unit: z.number().int().min(0) });
const hhmm = z.string().regex(/^([01][0-9]|2[0-3]):[0-5][0-9]$/, 'times are HH:MM (UTC)');

/**
 * Longest `units_per_window.seconds` (a day): the engine keeps each team's
 * conversions this long to count them (src/engine/window-ledger.ts). Rules
 * journaled before the cap with a longer window still replay; they count the
 * last day's units.
 */
export const MAX_WINDOW_SECONDS = 86_400;

export const conversionRulesSchema = z
  .object({
    /** Fees in cash (price units) per conversion: `fixed` + `per_unit` × amount, by side. */
    fees: z.object({ create: fee, redeem: fee }).optional(),
    /** Most units in one conversion. */
    max_units_per_conversion: z.number().int().positive().optional(),
    /** Most units a team converts (creates and redeems together) in any `seconds`-long window (at most MAX_WINDOW_SECONDS). */
    units_per_window: z.object({ units: z.number().int().positive(), seconds: z.number().int().positive().max(MAX_WINDOW_SECONDS, `a window is at most ${MAX_WINDOW_SECONDS} s (a day)`) }).optional(),
    /** |position| ≤ limit per symbol after the conversion: `refuse` it, or accept and `warn`. */
    position_limit: z.object({ limit: z.number().int().positive(), mode: z.enum(['refuse', 'warn']) }).optional(),
    /** Conversions only inside these UTC time-of-day windows (from inclusive, to exclusive; to < from wraps midnight). */
    windows: z
      .array(
        z.object({ from: hhmm, to: hhmm }).refine((w) => w.from !== w.to, {
          // An empty window (from its start to itself), not all day: with no other window every conversion was refused.
          message: 'a window from a time to the same time is empty: leave windows out for all day',
        }),
      )
      .min(1)
      .optional(),
  })
  .strict();

export type ConversionRules = z.infer<typeof conversionRulesSchema>;
