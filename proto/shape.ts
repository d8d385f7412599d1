/**
 * Checks of decoded NATS messages against their wire types. A message on the
 * bus may come from any process with the permission to publish it (or from
 * an older or newer version), so every process checks what it decodes before
 * using it. Checks are hand-written rather than zod schemas: the engine's
 * command batches, the gateway's answer batches and the notices run at the
 * system's full rate, where a schema library's cost would show (the HTTP
 * edge keeps zod). A check says what is wrong first, for the log line.
 */

/** The first thing wrong with a value as a message of its kind (`field: what it should be`), or null when it is one. */
export type Problem = (v: unknown) => string | null;

/** A message kind's check; `T` is the type a value that passes it has. */
export interface Shape<T> {
  /** The kind, as logs and errors name it. */
  readonly what: string;
  readonly problem: Problem;
  /** Carries `T` only. */
  readonly _type?: T;
}

export const shape = <T>(what: string, problem: Problem): Shape<T> => ({ what, problem });

export const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
export const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
export const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
export const isStr = (v: unknown): v is string => typeof v === 'string';
const isNumOrNull = (v: unknown): v is number | null => v === null || isNum(v);
export const isStrOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string';
export function isIntList(v: unknown): v is number[] {
  if (!Array.isArray(v)) return false;
  for (let i = 0; i < v.length; i++) if (!Number.isSafeInteger(v[i])) return false;
  return true;
}

/** One field's check, and what a bad value is said not to be. */
export interface Check {
  ok(v: unknown): boolean;
  what: string;
}

export const INT: Check = { ok: isInt, what: 'not an integer' };
export const NUM: Check = { ok: isNum, what: 'not a number' };
export const STR: Check = { ok: isStr, what: 'not a string' };
export const NUM_OR_NULL: Check = { ok: isNumOrNull, what: 'not a number or null' };
export const STR_OR_NULL: Check = { ok: isStrOrNull, what: 'not a string or null' };
export const INT_LIST: Check = { ok: isIntList, what: 'not a list of integers' };
export const STR_LIST: Check = { ok: (v) => Array.isArray(v) && v.every(isStr), what: 'not a list of strings' };
export const optional = (c: Check): Check => ({ ok: (v) => v === undefined || c.ok(v), what: c.what });
export const oneOf = (...values: readonly unknown[]): Check => ({ ok: (v) => values.includes(v), what: `not ${values.join(' or ')}` });

/**
 * A map's fields, each by its check, in the order given: the first bad one is
 * the problem. Reading fields by a name held in a variable is a slow lookup
 * in V8: a check on a hot path tests the fields by their names in a plain
 * expression first and asks this one only for the problem.
 */
export function fields(spec: Record<string, Check>): Problem {
  const list = Object.entries(spec);
  return (v) => {
    if (!isMap(v)) return 'not a map';
    for (const [name, check] of list) if (!check.ok(v[name])) return `${name}: ${check.what}`;
    return null;
  };
}

/**
 * Problems read `path: what` (`cmds[3].cmd.amount: not a number`); a check of
 * one field returns only `what`, or its own `path: what` below the field.
 */
export const at = (field: string, p: string | null): string | null =>
  p === null ? null : p.startsWith('[') ? `${field}${p}` : p.includes(': ') ? `${field}.${p}` : `${field}: ${p}`;

/** The first bad item of a list, named by its index, or null. */
export function itemsProblem(v: unknown, item: Problem): string | null {
  if (!Array.isArray(v)) return 'not a list';
  for (let i = 0; i < v.length; i++) {
    const p = item(v[i]);
    if (p !== null) return p.startsWith('[') ? `[${i}]${p}` : p.includes(': ') ? `[${i}].${p}` : `[${i}]: ${p}`;
  }
  return null;
}
