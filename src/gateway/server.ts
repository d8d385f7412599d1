import { assertPortFree } from '../shared/ports.js';
import uWS from 'uWebSockets.js';
import type { NatsConnection } from '@nats-io/transport-node';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FRONT_PEER_HEADER, ROUTES, conversionSchema } from '../../proto/http.js';
import type { Config } from '../config/config.js';
import { connectNats } from '../shared/nats.js';
import type { Logger } from '../shared/log.js';
import { EngineClient } from './engine-client.js';
import { Authenticator } from './auth.js';
import { Exchange, frontAddress, requestInfo, socketAddress, type RequestInfo } from './http.js';
import type { Front } from './front/front.js';
import { startFrontThread } from './front/worker.js';
import { gatherParams, type Params } from './params.js';
import * as routes from './routes.js';
import { FeedStatusView } from './feed-status.js';
import { startEtfsRoute } from './etfs.js';
import { attachWebSocket } from './ws/index.js';
import { createMetrics, routeLabel } from './metrics.js';
import { mountStatic } from './static.js';
import { mountOperator } from './operator.js';
import { Throttle } from './throttle.js';
import * as compat from './compat.js';
import { Marks } from './marks.js';
import { openApiDocument } from './openapi.js';
import { loadBaskets } from '../config/baskets.js';
import { Charts } from './charts.js';

export interface GatewayHandle {
  port: number;
  nc: NatsConnection;
  engine: EngineClient;
  auth: Authenticator;
  /** What GET /charts serves: prices and P&L sampled from published state, and the conversion scorecards. */
  charts: Charts;
  close(): Promise<void>;
}

/** Between requests, a client connection is closed after this long (uWS's own HTTP idle limit is 10 s too). */
const FRONT_IDLE_TIMEOUT_MS = 10_000;

/** uWS's listen callbacks as a promise: the listen socket, or an error naming where. */
const listening = (listen: (cb: (token: uWS.us_listen_socket | false) => void) => void, where: string) =>
  new Promise<uWS.us_listen_socket>((resolve, reject) => listen((token) => (token ? resolve(token) : reject(new Error(`cannot listen on ${where}`)))));

type Handler = (ex: Exchange, params: Params, info: RequestInfo) => Promise<void>;


export async function startGateway(cfg: Config, natsUrl: string, log: Logger): Promise<GatewayHandle> {
  await assertPortFree(cfg.http.host, cfg.http.port, 'gateway');
  const nc = await connectNats(natsUrl, 'etf-gateway', { role: 'gateway', credsFile: cfg.nats.creds });
  const engine = new EngineClient(nc, cfg.requestTimeoutMs, { shards: cfg.engine?.shards ?? 1 });
  const auth = new Authenticator(engine, cfg.bcryptRounds);
  const throttle = new Throttle(cfg.throttle);
  const marks = new Marks(nc, log);
  const etfs = startEtfsRoute(cfg, nc, log);
  const instruments = loadBaskets(cfg.basketsFile || undefined);
  const charts = new Charts(nc, engine, marks, instruments.tickerOf, (etf) => instruments.baskets.get(etf)?.symbol, log, { sampleMs: cfg.chartSampleMs });
  const deps: routes.RouteDeps = { engine, auth, throttle, bcryptRounds: cfg.bcryptRounds, conversion: conversionSchema(cfg.maxAmount), marks, tickerOf: instruments.tickerOf, scorecards: charts };
  const apiDescription = openApiDocument(cfg.maxAmount);
  const feedStatus = new FeedStatusView(nc);
  let natsConnected = true;
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') natsConnected = false;
      if (s.type === 'reconnect') natsConnected = true;
      if (s.type === 'disconnect' || s.type === 'reconnect') log.warn({ status: s.type }, 'nats connection');
    }
  })();

  const table = new Map<string, { method: string; handler: Handler }>([
    [ROUTES.register.path, { method: 'POST', handler: (ex, p) => routes.register(ex, deps, p) }],
    [ROUTES.create.path, { method: 'POST', handler: (ex, p) => routes.convert(ex, deps, p, 'create') }],
    [ROUTES.redeem.path, { method: 'POST', handler: (ex, p) => routes.convert(ex, deps, p, 'redeem') }],
    [ROUTES.holdings.path, { method: 'GET', handler: (ex, p) => routes.holdings(ex, deps, p) }],
    [ROUTES.health.path, { method: 'GET', handler: (ex) => routes.health(ex, deps, natsConnected, feedStatus, ws) }],
    [ROUTES.etfs.path, { method: 'GET', handler: async (ex) => etfs.handle(ex) }],
    [ROUTES.history.path, { method: 'GET', handler: (ex, p) => routes.history(ex, deps, p) }],
    [ROUTES.request.path, { method: 'GET', handler: (ex, p, info) => routes.request(ex, deps, p, info.path.slice(ROUTES.request.path.length - 1)) }],
    [ROUTES.positions.path, { method: 'GET', handler: (ex, p, info) => compat.positions(ex, deps, instruments, p, info.path.slice(ROUTES.positions.path.length - 1)) }],
    [ROUTES.symbols.path, { method: 'GET', handler: async (ex) => compat.symbols(ex, instruments) }],
    [ROUTES.openapi.path, { method: 'GET', handler: async (ex) => ex.json(200, apiDescription) }],
    [ROUTES.leaderboard.path, { method: 'GET', handler: (ex) => routes.leaderboard(ex, deps, instruments) }],
    [ROUTES.charts.path, { method: 'GET', handler: async (ex, p) => charts.handle(ex, p) }],
  ]);

  const framed = cfg.http.front !== 'direct';
  const addressOf = framed ? frontAddress : socketAddress;
  const run = async (ex: Exchange, info: RequestInfo, handler: Handler) => {
    let body: Buffer | null = null;
    if (info.method === 'GET' || info.method === 'HEAD') ex.holdConnection();
    else body = await ex.readBody(cfg.http.maxBodyBytes, info.contentLength);
    if (ex.done || ex.aborted) return;
    const params = gatherParams(info, body);
    if (!params.ok) return ex.error(params.code, params.message);
    await handler(ex, params.params, info);
  };

  const app = uWS.App();
  // Before the catch-all route, so /ws upgrades reach the WebSocket handler.
  const ws = attachWebSocket(app, { nc, engine, auth, throttle, marks, tickerOf: instruments.tickerOf }, log, {}, addressOf);
  const metrics = createMetrics({ engine, feed: feedStatus, ws: () => ws.stats }, log);
  metrics.mount(app);
  mountStatic(app, metrics, log);
  const operator = mountOperator(app, cfg, { nc, engine, feed: feedStatus, ws: () => ws.stats, metrics, marks }, log);
  app.any('/*', (res, req) => {
    const info = requestInfo(req, res, addressOf);
    const ex = new Exchange(res, info.method, !framed);
    ex.address = info.address;
    const label = routeLabel(info.path, table.keys());
    metrics.track(ex, info.method, label);
    const busy = throttle.request(info.address);
    if (busy) return routes.tooMany(ex, busy);
    const route = table.get(label);
    if (!route) return ex.error('not_found', `no route ${info.path}`);
    if (info.method !== route.method && !(ex.head && route.method === 'GET')) {
      return ex.json(405, { error: { code: 'method_not_allowed', message: `${info.path} takes ${route.method}` } }, { allow: route.method });
    }
    run(ex, info, route.handler).catch((err: unknown) => {
      log.error({ err, path: info.path }, 'request failed');
      ex.error('internal', 'internal error');
    });
  });

  let listenSocket: uWS.us_listen_socket;
  let front: Front | null = null;
  let port: number;
  let socketDir = '';
  if (framed) {
    // A directory only this user can enter: behind the front, uWS believes the peer header, so nobody else may reach it.
    socketDir = await mkdtemp(join(tmpdir(), 'etf-gateway-'));
    const upstreamPath = join(socketDir, 'uws.sock');
    listenSocket = await listening((cb) => app.listen_unix(cb, upstreamPath), upstreamPath);
    front = await startFrontThread({ host: cfg.http.host, port: cfg.http.port, upstreamPath, peerHeader: FRONT_PEER_HEADER, idleTimeoutMs: FRONT_IDLE_TIMEOUT_MS, log });
    port = front.port;
  } else {
    listenSocket = await listening((cb) => app.listen(cfg.http.host, cfg.http.port, cb), `${cfg.http.host}:${cfg.http.port}`);
    port = uWS.us_socket_local_port(listenSocket);
  }
  log.info({ host: cfg.http.host, port, front: framed ? 'framed' : 'direct' }, 'gateway listening');

  return {
    port,
    nc,
    engine,
    auth,
    charts,
    close: async () => {
      // Answers in flight still go out: the front stops taking requests and waits for them, uWS closes after.
      const fronted = front?.close();
      ws.close();
      await fronted;
      uWS.us_listen_socket_close(listenSocket);
      if (socketDir) await rm(socketDir, { recursive: true, force: true });
      operator.close();
      throttle.close();
      engine.close();
      etfs.close();
      charts.close();
      marks.close();
      feedStatus.close();
      await nc.drain();
    },
  };
}
