import { WS_LIMITS } from '../../../proto/ws.js';

/** The stream's limits (proto/ws.ts WS_LIMITS), overridable for tests and benches. */
export type WsLimits = { -readonly [K in keyof typeof WS_LIMITS]: number };

export const wsLimits = (overrides: Partial<WsLimits> = {}): WsLimits => ({ ...WS_LIMITS, ...overrides });
