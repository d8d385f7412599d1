import { assertPortFree } from '../shared/ports.js';
import type { NatsConnection } from '@nats-io/transport-node';
import { ROUTES, conversionSchema } from '../../proto/http.js';
import type { Config } from '../config/config.js';
import { callbackThrows, connectNats, natsRefusals } from '../shared/nats.js';
import type { Logger } from '../shared/log.js';
import { EngineClient } from '../shared/engine-client.js';
import { Authenticator, authOptions } from './auth.js';
import { SignInChangesFollower } from './signin-changes.js';
import { HttpCall, STATE_CHANGING, decodablePath, foreignOrigin, guarded, type Reply, type RequestInfo } from './http.js';
import { checkHttpServer, createHttpServer, type HttpServerKind } from './transport/index.js';
import { gatherParams, type Params } from './params.js';
import * as routes from './routes.js';
import { FeedStatusView } from './feed-status.js';
import { PricingStatusView } from './pricing-status.js';
import { startEtfsRoute, type EtfsRoute } from './etfs.js';
import { createWebSocket, type WsHandle } from './ws/index.js';
import { createMetrics, routeLabel, METRICS_PATH, type GatewayMetrics } from './metrics.js';
import { staticFiles } from './static.js';
import { mountOperator } from './operator.js';
import { Throttle } from './throttle.js';
import * as compat from './compat.js';
import { Marks } from '../shared/marks.js';
import { openApiDocument } from './openapi.js';
import { loadBaskets, type Instruments } from '../config/baskets.js';
import { Charts } from './charts.js';
import { ConversionAnswerWriter } from './answer-json.js';

export interface GatewayHandle {
  port: number;
  /** The HTTP/WebSocket server it runs on (HTTP_SERVER). */
  server: HttpServerKind;
  nc: NatsConnection;
  engine: EngineClient;
  auth: Authenticator;
  /** Hears whose sign-in changed: expires them in `auth` and closes their WebSocket streams. */
  signIns: SignInChangesFollower;
  /** What GET /charts serves and the conversion scorecards: read from the desk stream the pricing service writes (src/pricing/desk.ts). */
  charts: Charts;
  close(): Promise<void>;
}

type Handler = (ex: HttpCall, params: Params, info: RequestInfo) => Promise<void> | void;
type ApiTable = Map<string, { method: string; handler: Handler }>;

/** Whether the gateway's own NATS connection is up, for /health: followed from its status events. */
function followNats(nc: NatsConnection, log: Logger): () => boolean {
  let connected = true;
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') connected = false;
      if (s.type === 'reconnect') connected = true;
      if (s.type === 'disconnect' || s.type === 'reconnect') log.warn({ status: s.type }, 'nats connection');
    }
  })();
  return () => connected;
}

/** What the public API routes need beyond the routes' own deps (proto/http.ts ROUTES). */
interface ApiParts {
  deps: routes.RouteDeps;
  instruments: Instruments;
  natsConnected: () => boolean;
  feedStatus: FeedStatusView;
  pricingStatus: PricingStatusView;
  ws: () => WsHandle;
  etfs: EtfsRoute;
  charts: Charts;
  apiDescription: Record<string, unknown>;
}

/** The public API: a path, the one method it takes, and its handler. */
function apiTable(a: ApiParts): ApiTable {
  const { deps, instruments } = a;
  return new Map([
    [ROUTES.register.path, { method: 'POST', handler: (ex, p) => routes.register(ex, deps, p) }],
    [ROUTES.create.path, { method: 'POST', handler: (ex, p) => routes.convert(ex, deps, p, 'create') }],
    [ROUTES.redeem.path, { method: 'POST', handler: (ex, p) => routes.convert(ex, deps, p, 'redeem') }],
    [ROUTES.holdings.path, { method: 'GET', handler: (ex, p) => routes.holdings(ex, deps, p) }],
    [ROUTES.health.path, { method: 'GET', handler: (ex) => routes.health(ex, deps, a.natsConnected(), { feed: a.feedStatus, pricing: a.pricingStatus }, a.ws()) }],
    [ROUTES.etfs.path, { method: 'GET', handler: async (ex) => a.etfs.handle(ex) }],
    [ROUTES.history.path, { method: 'GET', handler: (ex, p) => routes.history(ex, deps, p) }],
    [ROUTES.request.path, { method: 'GET', handler: (ex, p, info) => routes.request(ex, deps, p, info.path.slice(ROUTES.request.path.length - 1)) }],
    [ROUTES.positions.path, { method: 'GET', handler: (ex, p, info) => compat.positions(ex, deps, instruments, p, info.path.slice(ROUTES.positions.path.length - 1)) }],
    [ROUTES.symbols.path, { method: 'GET', handler: async (ex) => compat.symbols(ex, instruments) }],
    [ROUTES.openapi.path, { method: 'GET', handler: async (ex) => ex.json(200, a.apiDescription) }],
    [ROUTES.leaderboard.path, { method: 'GET', handler: (ex) => routes.leaderboard(ex, deps, instruments) }],
    [ROUTES.charts.path, { method: 'GET', handler: async (ex, p) => a.charts.handle(ex, p) }],
  ]);
}

/** A public API call: its parameters from the query and body, then its handler. */
async function run(cfg: Config, ex: HttpCall, info: RequestInfo, handler: Handler): Promise<void> {
  let body: Buffer | null = null;
  if (info.method === 'GET' || info.method === 'HEAD') ex.holdConnection();
  else body = await ex.readBody(cfg.http.maxBodyBytes, info.contentLength);
  if (ex.done || ex.aborted) return;
  const params = gatherParams(info, body);
  if (!params.ok) return ex.error(params.code, params.message);
  await handler(ex, params.params, info);
}

interface DispatchParts {
  cfg: Config;
  log: Logger;
  table: ApiTable;
  throttle: Throttle;
  metrics: GatewayMetrics;
  pages: ReturnType<typeof staticFiles>;
  operator: ReturnType<typeof mountOperator>;
  allowedOrigins: ReadonlySet<string>;
}

/** Every request but WebSocket upgrades, whichever server runs: written once. */
function dispatcher(d: DispatchParts): (info: RequestInfo, reply: Reply) => void {
  const { log, metrics, allowedOrigins } = d;
  return (info, reply) => {
    const ex = new HttpCall(reply, info.method);
    ex.address = info.address;
    if (STATE_CHANGING.has(info.method) && foreignOrigin(info, allowedOrigins)) {
      metrics.track(ex, info.method, 'foreign_origin');
      return ex.error('forbidden', `cross-origin ${info.method} refused: Origin ${info.origin} is not this gateway (HTTP_ALLOWED_ORIGINS lists others)`, { field: 'origin' });
    }
    if (info.path === METRICS_PATH) return guarded(ex, log, info.path, () => metrics.serve(ex, info.method));
    if (d.pages.matches(info.path)) return guarded(ex, log, info.path, () => d.pages.serve(ex, info));
    // Every API answer may carry an account's figures or take credentials: never stored by a browser or proxy.
    ex.headers.push(['cache-control', 'no-store']);
    if (info.path.startsWith(d.operator.prefix)) return d.operator.handle(ex, info);
    const label = routeLabel(info.path, d.table.keys());
    metrics.track(ex, info.method, label);
    const busy = d.throttle.request(info.address);
    if (busy) return routes.tooMany(ex, busy);
    if (!decodablePath(info.path)) return ex.error('bad_request', 'the path has a malformed percent-escape');
    const route = d.table.get(label);
    if (!route) return ex.error('not_found', `no route ${info.path}`);
    if (info.method !== route.method && !(ex.head && route.method === 'GET')) {
      return ex.json(405, { error: { code: 'method_not_allowed', message: `${info.path} takes ${route.method}` } }, { allow: route.method });
    }
    guarded(ex, log, info.path, () => run(d.cfg, ex, info, route.handler));
  };
}

export async function startGateway(cfg: Config, natsUrl: string, log: Logger): Promise<GatewayHandle> {
  await checkHttpServer(cfg.http.server ?? 'auto');
  await assertPortFree(cfg.http.host, cfg.http.port, 'gateway');
  const nc = await connectNats(natsUrl, 'etf-gateway', { role: 'gateway', credsFile: cfg.nats.creds, log });
  const engine = new EngineClient(nc, cfg.requestTimeoutMs, { shards: cfg.engine?.shards ?? 1, log });
  const auth = new Authenticator(engine, cfg.bcryptRounds, authOptions(cfg));
  const throttle = new Throttle(cfg.throttle);
  const marks = new Marks(nc, log);
  const etfs = startEtfsRoute(cfg, nc, log);
  const instruments = loadBaskets(cfg.basketsFile || undefined);
  const charts = new Charts(nc, engine, log);
  const deps: routes.RouteDeps = { engine, auth, throttle, registration: routes.registrationPolicy(cfg), bcryptRounds: cfg.bcryptRounds, conversion: conversionSchema(cfg.maxAmount), marks, tickerOf: instruments.tickerOf, answers: new ConversionAnswerWriter(instruments.tickerOf), scorecards: charts };
  const feedStatus = new FeedStatusView(nc, log);
  const pricingStatus = new PricingStatusView(nc, { expected: cfg.expectPricing ?? false, startGraceMs: cfg.pricingStartGraceMs }, log);
  const allowedOrigins = new Set(cfg.http.allowedOrigins ?? []);
  // A page on another site may open a WebSocket too: the same Origin rule as for state-changing requests.
  const ws = createWebSocket({ nc, engine, auth, throttle, marks, tickerOf: instruments.tickerOf }, log, {}, (info) => !foreignOrigin(info, allowedOrigins));
  const signIns = new SignInChangesFollower(nc, [(names) => auth.expire(names ?? undefined), (names) => ws.signInChanged(names)], log);
  const table = apiTable({ deps, instruments, natsConnected: followNats(nc, log), feedStatus, pricingStatus, ws: () => ws, etfs, charts, apiDescription: openApiDocument(cfg.maxAmount) });
  const metrics = createMetrics({ engine, feed: feedStatus, pricing: pricingStatus, ws: () => ws.stats, natsRefused: () => natsRefusals(nc).total, natsHandlerThrows: () => callbackThrows(nc) }, log);
  const pages = staticFiles(metrics, log);
  const operator = mountOperator(cfg, { nc, engine, feed: feedStatus, pricing: pricingStatus, ws: () => ws.stats, metrics, marks, throttle }, log);
  const handler = dispatcher({ cfg, log, table, throttle, metrics, pages, operator, allowedOrigins });

  const server = await createHttpServer(cfg.http.server ?? 'auto', { handler, ws: ws.endpoint, log }, log);
  const port = await server.listen(cfg.http.host, cfg.http.port);
  log.info({ host: cfg.http.host, port, server: server.kind }, 'gateway listening');

  const close = async () => {
    // Answers in flight still go out; WebSocket clients get 1001 first.
    ws.close();
    await server.close();
    for (const part of [operator, throttle, engine, etfs, charts, marks, feedStatus, pricingStatus, signIns]) part.close();
    await nc.drain();
  };
  return { port, server: server.kind, nc, engine, auth, signIns, charts, close };
}
