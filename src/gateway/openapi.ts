import { z } from 'zod';
import { OPERATOR_ROUTES } from '../../proto/operator.js';
import { conversionRulesSchema } from '../../proto/rules.js';
import { PAGES, WEB_PREFIX } from './static.js';
import { WS_CLOSE, wsThrottled } from '../../proto/ws.js';
import { conversionSchema, credentialsSchema, historySchema, httpErrorSchema, registerSchema, ROUTES, HTTP_STATUS, REQUEST_ID_HEADER } from '../../proto/http.js';

/** zod → JSON Schema (2020-12, what OpenAPI 3.1 uses), as the request arrives (before transforms). */
const schema = (s: z.ZodType) => {
  const { $schema: _s, ...rest } = z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
};

const json = (ref: string) => ({ 'application/json': { schema: { $ref: `#/components/schemas/${ref}` } } });
const errors = (...statuses: number[]) =>
  Object.fromEntries(statuses.map((s) => [String(s), { description: errorText(s), content: json('Error') }]));
const errorText = (status: number) =>
  `${Object.entries(HTTP_STATUS)
    .filter(([, v]) => v === status)
    .map(([k]) => k)
    .join(', ')}`;
const ok = (description: string) => ({ '200': { description, content: { 'application/json': { schema: { type: 'object' } } } } });
const credentials = [{ basicAuth: [] }, { queryCredentials: [] }];
const body = (ref: string) => ({
  required: true,
  content: { 'application/json': { schema: { $ref: `#/components/schemas/${ref}` } }, 'application/x-www-form-urlencoded': { schema: { $ref: `#/components/schemas/${ref}` } } },
});

/** A conversion: its body, its idempotency key, and what it answers. */
const conversion = (op: 'create' | 'redeem') => ({
  post: {
    summary: op === 'create' ? 'Create ETF units from the basket (basket debited, ETF credited)' : 'Redeem ETF units into the basket',
    security: credentials,
    parameters: [{ name: REQUEST_ID_HEADER, in: 'header', required: false, schema: { type: 'string' }, description: 'idempotency key (or body request_id): a retry returns the first result' }],
    requestBody: body('Conversion'),
    responses: { ...ok('the conversion: deltas, holdings, request_id'), ...errors(400, 401, 409, 429, 503) },
  },
});

/** A team's own account: registering, converting, and reading its holdings and decisions. */
const accountPaths = (): Record<string, unknown> => ({
  [ROUTES.register.path]: { post: { summary: 'Register a team', requestBody: body('Register'), responses: { ...ok('{client_id, username}'), ...errors(400, 403, 429, 503) } } },
  [ROUTES.create.path]: conversion('create'),
  [ROUTES.redeem.path]: conversion('redeem'),
  [ROUTES.holdings.path]: { get: { summary: "A team's holdings", security: credentials, responses: { ...ok('{client_id, username, seq, holdings, positions, cash, pnl, last_reset}: last_reset is the last exchange reset, which started cash, positions and P&L again from 0 ({ts: when stored, ms; last_request_id: the last request decided before it, or null}), null when there was none'), ...errors(401, 429, 503) } } },
  [ROUTES.history.path]: {
    get: {
      summary: "A team's decisions, newest first",
      security: credentials,
      parameters: Object.entries((schema(historySchema) as { properties: Record<string, unknown> }).properties).map(([name, s]) => ({ name, in: 'query', required: false, schema: s })),
      responses: { ...ok('{entries, next?}: each entry has deltas_by_ticker and holdings_by_ticker (maps by ticker, the preferred form, as in a conversion answer) beside the lists deltas and holdings (kept for older scripts), and an accepted conversion its scorecard'), ...errors(400, 401, 429, 503) },
    },
  },
  '/requests/{id}': {
    get: {
      summary: 'One request\'s outcome, by the engine\'s id (r42) or the client\'s key',
      security: credentials,
      parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
      responses: { ...ok('the audit entry, with deltas_by_ticker / holdings_by_ticker (preferred) and scorecard as in /history'), ...errors(401, 404, 429, 503) },
    },
  },
});

/** The routes NDFEX's own ETF service has, answered alike. */
const compatPaths = (): Record<string, unknown> => ({
  '/positions/{client_id}': {
    get: {
      summary: "NDFEX ETF service compatible: the team's positions (own account only)",
      security: credentials,
      parameters: [{ name: 'client_id', in: 'path', required: true, schema: { type: 'integer' } }],
      responses: { ...ok('{client_id, positions, holdings}'), ...errors(401, 403, 404, 429, 503) },
    },
  },
  '/positions/{client_id}/{symbol}': {
    get: {
      summary: 'NDFEX ETF service compatible: one position (symbol id or ticker)',
      security: credentials,
      parameters: [
        { name: 'client_id', in: 'path', required: true, schema: { type: 'integer' } },
        { name: 'symbol', in: 'path', required: true, schema: { type: 'string' } },
      ],
      responses: { ...ok('{client_id, symbol, ticker, quantity}'), ...errors(401, 403, 404, 429, 503) },
    },
  },
  [ROUTES.symbols.path]: { get: { summary: "The exchange's symbols and the ETFs", responses: ok('{symbols}') } },
});

/** What anyone may read without credentials, and the servers' own endpoints. */
const publicPaths = (): Record<string, unknown> => ({
  [ROUTES.health.path]: { get: { summary: 'Liveness: NATS, engine, feed bridge, pricing service, WebSocket hub', responses: { ...ok('{status: ok|degraded, problems?, ...}'), '503': { description: 'engine or NATS down (engine_faults: why an engine shard last exited)' } } } },
  [ROUTES.etfs.path]: { get: { summary: 'Every ETF, its basket and latest prices', responses: ok('{etfs}') } },
  [ROUTES.leaderboard.path]: { get: { summary: 'Every team ranked by P&L: cash plus positions at mid prices', responses: { ...ok('{teams: [{rank, client_id, username, traded, cash, marked, total, unmarked, stale?}], ts}: teams that traded first'), ...errors(503) } } },
  [ROUTES.charts.path]: {
    get: {
      summary: 'What the pages chart: ETF mid, NAV and premium per ETF and every active team\'s P&L over the session, on one time axis',
      parameters: [
        { name: 'since', in: 'query', required: false, schema: { type: 'integer' }, description: 'only points after this time (ms)' },
        { name: 'team', in: 'query', required: false, schema: { type: 'string' }, description: "that team's P&L alone (username)" },
      ],
      responses: { ...ok('{t, step_ms, etfs: {ETF: {etf, nav, premium}}, teams: [{client_id, username, pnl}], halts, ts}'), ...errors(400, 429) },
    },
  },
  '/openapi.json': { get: { summary: 'This description', responses: ok('OpenAPI 3.1') } },
  '/ws': { get: { summary: 'WebSocket holdings stream (upgrade); protocol in docs/ws.md', description: wsCloses(), security: credentials, responses: { '101': { description: 'switching protocols' } } } },
  '/metrics': { get: { summary: 'Prometheus metrics', responses: { '200': { description: 'Prometheus text format', content: { 'text/plain': { schema: { type: 'string' } } } } } } },
});

/** The stream's close codes, from proto/ws.ts itself: a client reads here which to retry. */
function wsCloses(): string {
  const byCode = new Map<number, string[]>();
  for (const c of Object.values(WS_CLOSE)) {
    const reason = c === WS_CLOSE.throttled ? wsThrottled('<scope>', 0).reason.replace(/\d+ s$/, '<seconds> s') : c.reason;
    byCode.set(c.code, [...(byCode.get(c.code) ?? []), `"${reason}"`]);
  }
  const lines = [...byCode].map(([code, reasons]) => `${code}: ${reasons.join(', ')}`);
  return `Close codes: ${lines.join('; ')}. A 4001 other than "${WS_CLOSE.signInChanged.reason}" is final (wrong credentials); a 4029 is the login throttle (HTTP's 429): connect again after the seconds it gives; after 1001, 1013 or 4008 reconnect and resume.`;
}

/** The web pages and their static files. */
const pagePaths = (): Record<string, unknown> => ({
  ...Object.fromEntries(
    Object.entries(PAGES).map(([path, file]) => [path, { get: { summary: `web page (${file})`, responses: { '200': { description: 'HTML', content: { 'text/html': { schema: { type: 'string' } } } } } } }]),
  ),
  [`${WEB_PREFIX}{file}`]: { get: { summary: "the pages' scripts and styles", parameters: [{ name: 'file', in: 'path', required: true, schema: { type: 'string' } }], responses: { '200': { description: 'a static file' }, ...errors(404) } } },
});

const OPERATOR_WRITES: ReadonlySet<string> = new Set(['halt', 'resume', 'basket', 'feedVerdict', 'feedAck']);

/** The operator's API (proto/operator.ts), behind the operator's own credentials. */
const operatorPaths = (): Record<string, unknown> =>
  Object.fromEntries(
    Object.entries(OPERATOR_ROUTES).map(([name, path]) => [
      path,
      {
        [OPERATOR_WRITES.has(name) ? 'post' : 'get']: { summary: `operator: ${name}`, security: [{ basicAuth: [] }], responses: { ...ok(`the operator's ${name}`), ...errors(400, 401, 429, 503) } },
        ...(name === 'rules'
          ? { put: { summary: 'operator: replace the conversion rules (journaled with who and when)', security: [{ basicAuth: [] }], requestBody: { required: true, content: json('Rules') }, responses: { ...ok('the rules in force'), ...errors(400, 401, 429, 503) } } }
          : {}),
      },
    ]),
  );

/**
 * The HTTP API as OpenAPI 3.1, built from proto/http.ts: request schemas are
 * the gateway's own zod schemas, and the paths are its ROUTES, so the
 * description cannot drift from what is enforced. Served at /openapi.json.
 */
export function openApiDocument(maxAmount: number): Record<string, unknown> {
  return {
    openapi: '3.1.0',
    info: { title: 'ETF engine for NDFEX', version: '1', description: 'Creations and redemptions of NDFEX ETFs, and every team\'s positions. Errors are JSON: {"error": {"code", "message", "field"?}}. One shape per name: holdings and deltas by ticker are maps ({"KNAN": -2}); /history and /requests entries keep their lists of that name and carry the maps as holdings_by_ticker and deltas_by_ticker, the preferred form.' },
    paths: { ...accountPaths(), ...compatPaths(), ...publicPaths(), ...pagePaths(), ...operatorPaths() },
    components: {
      schemas: {
        Error: schema(httpErrorSchema),
        Register: schema(registerSchema),
        Conversion: { ...schema(conversionSchema(maxAmount)), description: 'plus username and password, unless sent as HTTP Basic auth' },
        Credentials: schema(credentialsSchema),
        Rules: schema(conversionRulesSchema),
      },
      securitySchemes: {
        basicAuth: { type: 'http', scheme: 'basic' },
        queryCredentials: { type: 'apiKey', in: 'query', name: 'username', description: 'username and password as parameters (query, form or JSON body)' },
      },
    },
  };
}
