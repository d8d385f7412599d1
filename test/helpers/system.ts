import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { startService, type ServiceProcess } from '../../src/shared/service-process.js';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { PROJECT_ROOT, type Config } from '../../src/config/config.js';
import { freePort, natsServerBinary, natsServerEnv, startNatsServer, type NatsServer } from '../../src/launcher/nats-server.js';
import { startEngine, type EngineHandle } from '../../src/engine/service.js';
import { startGateway, type GatewayHandle } from '../../src/gateway/server.js';
import { createLogger } from '../../src/shared/log.js';
import { encode } from '../../proto/codec.js';
import { fillSubject } from '../../proto/subjects.js';
import type { Fill } from '../../proto/fill.js';
import type { Delta } from '../../proto/journal.js';
import { ensureFillStream } from '../../src/shared/streams.js';
import { afterAll, beforeAll } from 'vitest';
import { awaitHoldingsSeq } from './events.js';
import { natsServers } from '../../src/shared/nats.js';
import { DeskRecorder } from '../../src/pricing/desk.js';
import { loadBaskets } from '../../src/config/baskets.js';

export const quietLog = createLogger('test', process.env.TEST_LOG_LEVEL ?? 'silent');

export function tempDir(prefix = 'etf-test-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A server that could not listen because its port was taken meanwhile (a free port checked, then bound by another process). */
export const portTaken = (err: unknown): boolean => String((err as Error)?.message).includes('address already in use');

/** A real nats-server on a free loopback port with a temporary JetStream store. */
/** `maxPayload`: the server's message limit (NATS's default is 1 MB), for what must hold under a smaller one. */
/** `leafnodes`: it takes leaf nodes (startLeafNats) on `leafPort`. */
export async function startTestNats(storeDir?: string, opts: { maxPayload?: number; leafnodes?: boolean } = {}): Promise<NatsServer & { storeDir: string; remove(): void; leafPort?: number }> {
  const dir = storeDir ? { path: storeDir, remove: () => {} } : tempDir('etf-nats-');
  // A free port can be taken by another test file's process before nats-server binds it: another one then.
  for (let attempt = 1; ; attempt++) {
    const lines: string[] = [];
    if (opts.maxPayload !== undefined) lines.push(`max_payload: ${opts.maxPayload}`);
    const leafPort = opts.leafnodes ? await freePort() : undefined;
    if (leafPort !== undefined) lines.push(`leafnodes { host: 127.0.0.1, port: ${leafPort} }`);
    let configFile: string | undefined;
    if (lines.length) {
      configFile = join(dir.path, 'nats.conf');
      writeFileSync(configFile, lines.join('\n') + '\n');
    }
    try {
      const server = await startNatsServer({ port: await freePort(), storeDir: dir.path, ...(configFile ? { configFile } : {}) });
      return Object.assign(server, { storeDir: dir.path, remove: dir.remove, ...(leafPort !== undefined ? { leafPort } : {}) });
    } catch (err) {
      if (attempt >= 5 || !portTaken(err)) throw err;
    }
  }
}

/**
 * A nats-server on `port`, a leaf node of the one taking leaf nodes on
 * `hubLeafPort` (startTestNats with `leafnodes`), with JetStream kept out of
 * the link both ways: core NATS (a service's status, prices) flows between
 * the two, JetStream does not. With `storeDir` it has JetStream of its own;
 * without, a service on it finds JetStream not answering, as a cluster's
 * clients do while it elects its leaders.
 */
export async function startLeafNats(hubLeafPort: number, port: number, storeDir: string | null, confDir: string): Promise<{ url: string; stop(): Promise<void> }> {
  const conf = join(confDir, `leaf-${port}.conf`);
  writeFileSync(
    conf,
    [
      `host: 127.0.0.1`,
      `port: ${port}`,
      `server_name: leaf-${port}`,
      ...(storeDir ? [`jetstream { store_dir: ${JSON.stringify(storeDir)} }`] : []),
      `leafnodes { remotes [ { url: "nats-leaf://127.0.0.1:${hubLeafPort}", deny_imports: ["$JS.>"], deny_exports: ["$JS.>"] } ] }`,
    ].join('\n') + '\n',
  );
  const s = await startService({ name: 'nats-server (leaf)', command: natsServerBinary(), args: ['-c', conf], env: natsServerEnv(process.env), readyOn: 'stderr', ready: (line) => line.includes('Server is ready'), timeoutMs: 10_000 });
  return { url: `nats://127.0.0.1:${port}`, stop: () => s.stop() };
}

export const MULTI_BASKETS = join(PROJECT_ROOT, 'config/baskets.multi.example.json');

/** A config for tests: fast bcrypt, port 0, files in a temp dir. */
export function testConfig(dir: string, overrides: Partial<Config> & { roster?: string } = {}): Config {
  const accountsFile = join(dir, 'accounts.txt');
  writeFileSync(accountsFile, overrides.roster ?? '1 team1 team1pass\n2 team2 team2pass\n');
  const { roster: _r, ...rest } = overrides;
  return {
    // HTTP_SERVER=uws|node runs a whole file on that server (absent: auto, as npm start).
    http: { host: '127.0.0.1', port: 0, maxBodyBytes: 16384, ...(process.env.HTTP_SERVER ? { server: process.env.HTTP_SERVER as 'auto' | 'uws' | 'node' } : {}) },
    nats: { url: '', port: 0 },
    dataDir: dir,
    accountsFile,
    basketsFile: '',
    maxAmount: 1_000_000,
    bcryptRounds: 4,
    requestTimeoutMs: 5000,
    snapshotEvery: 100_000,
    logLevel: 'silent',
    ...rest,
  };
}

export interface TestSystem {
  /** Shard 0's engine, the first gateway. */
  engine: EngineHandle;
  gateway: GatewayHandle;
  /** Every engine shard (cfg.engine.shards, default 1), in shard order, and every gateway. */
  engines: EngineHandle[];
  gateways: GatewayHandle[];
  /** The first gateway's; `urls` has each one's. */
  url: string;
  urls: string[];
  /** The desk's writer (charts and scorecards), as the pricing service runs it, when asked for. */
  desk?: DeskRecorder | null;
  close(): Promise<void>;
}

/**
 * The real engines and gateways, in this process, against a real nats-server:
 * one engine per shard of cfg.engine.shards, and `gateways` gateways (default 1).
 */
export async function startSystem(natsUrl: string, cfg: Config, gatewayCount = 1, opts: { desk?: boolean } = {}): Promise<TestSystem> {
  const shards = cfg.engine?.shards ?? 1;
  const engines: EngineHandle[] = [];
  for (let shard = 0; shard < shards; shard++) {
    const shardCfg = shards === 1 ? cfg : { ...cfg, engine: { shards, shard } };
    engines.push(
      await startEngine(shardCfg, natsUrl, quietLog, (err) => {
        throw err;
      }),
    );
  }
  // A shard's lines whose usernames a later shard decides wait for that shard's start: every one taken before the system is.
  await Promise.all(engines.map((e) => e.roster?.settled()));
  const deskNc = opts.desk ? await natsClient(natsUrl) : null;
  const desk = deskNc ? await DeskRecorder.start(deskNc, loadBaskets(cfg.basketsFile || undefined), quietLog, { sampleMs: cfg.chartSampleMs, shards }) : null;
  const gateways: GatewayHandle[] = [];
  for (let i = 0; i < gatewayCount; i++) gateways.push(await startGateway(cfg, natsUrl, quietLog));
  const urls = gateways.map((g) => `http://127.0.0.1:${g.port}`);
  return {
    engine: engines[0]!,
    gateway: gateways[0]!,
    engines,
    gateways,
    url: urls[0]!,
    urls,
    desk,
    close: async () => {
      await desk?.close();
      await deskNc?.close();
      for (const g of gateways) await g.close();
      for (const e of engines) await e.close();
    },
  };
}

/**
 * The engine as its own OS process, so a test can SIGKILL it. Resolves once it says it is ready (its ready message),
 * with what its "engine ready" line says as `ready`; `logs` keeps what it logs after that line (the last 20,000 lines).
 */
export async function spawnEngine(
  natsUrl: string,
  cfg: Config,
  /** More environment (e.g. NODE_OPTIONS for a test's fault hook). */
  extraEnv: NodeJS.ProcessEnv = {},
): Promise<ChildProcess & { ready: Record<string, any>; startLog: Record<string, any>[]; logs: Record<string, any>[] }> {
  const env = {
    ...process.env,
    ...extraEnv,
    NATS_URL: natsUrl,
    CONFIG_FILE: writeConfigFile(cfg),
    LOG_LEVEL: 'info',
  };
  const startLog: Record<string, any>[] = [];
  const logs: Record<string, any>[] = [];
  let isReady = false;
  // The ready message and the lines before it come on two channels: `startLog` is whole once the ready line is read too.
  let lineRead!: () => void;
  const readyLine = new Promise<void>((r) => (lineRead = r));
  const service = await startService({
    name: 'engine',
    args: [join(PROJECT_ROOT, 'dist/src/engine/main.js')],
    env,
    ready: 'message',
    onLine: (line) => {
      if (!line.startsWith('{')) return;
      if (line.includes('"engine ready"')) {
        isReady = true;
        lineRead();
      } else if (!isReady && startLog.length < 100) startLog.push(JSON.parse(line) as Record<string, any>);
      else if (isReady) {
        logs.push(JSON.parse(line) as Record<string, any>);
        if (logs.length > 20_000) logs.shift();
      }
    },
  });
  await Promise.race([readyLine, service.exited]);
  const child = service.child;
  return Object.assign(child, { ready: service.ready as Record<string, any>, startLog, logs });
}

/**
 * A built service (dist/src/<script>, e.g. gateway/main.js) as its own OS process, with this process's environment and `env`;
 * resolves once it says it is ready (its ready message). Its log is read and dropped: a test asserts on what it can observe.
 */
export function spawnService(name: string, script: string, env: NodeJS.ProcessEnv, timeoutMs?: number): Promise<ServiceProcess<Record<string, unknown>>> {
  return startService({
    name,
    args: [join(PROJECT_ROOT, 'dist/src', script)],
    env: { ...process.env, ...env },
    ready: 'message',
    onLine: () => {},
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
  });
}

export function writeConfigFile(cfg: Config): string {
  const path = join(cfg.dataDir, `config-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(path, JSON.stringify({ ...cfg, logLevel: 'info' }));
  return path;
}

export async function killProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await exited;
}

export async function natsClient(url: string): Promise<NatsConnection> {
  return connect({ servers: natsServers(url), noAsyncTraces: true });
}

/** Publishes fills onto the fill stream as the feed bridge does, and waits for JetStream's acks. */
export async function publishFills(nc: NatsConnection, fills: Fill[]): Promise<void> {
  await ensureFillStream(nc);
  const js = jetstream(nc);
  await Promise.all(fills.map((f) => js.publish(fillSubject(f.client_id), encode(f))));
}

let fillSeq = 1;
/** Buy (positive) or sell (negative) fills for one account, as fills of the given symbols. */
export function fillsFor(clientId: number, quantities: Record<number, number>): Fill[] {
  return Object.entries(quantities).map(([symbol, q]) => ({
    seq: fillSeq++,
    client_id: clientId,
    symbol: Number(symbol),
    side: q >= 0 ? 1 : 2,
    quantity: Math.abs(q),
    price: 100,
  }));
}

/** Each account's positions (symbol → quantity, zeros left out) that `fills` (quantity signed: a sell negative) and the conversions' deltas add up to. */
export function expectedPositions(fills: readonly Pick<Fill, 'client_id' | 'symbol' | 'quantity'>[], conversions: Iterable<[clientId: number, deltas: readonly Delta[]]>): Map<number, Map<number, number>> {
  const expected = new Map<number, Map<number, number>>();
  const add = (id: number, symbol: number, d: number) => {
    const m = expected.get(id) ?? new Map<number, number>();
    m.set(symbol, (m.get(symbol) ?? 0) + d);
    if (m.get(symbol) === 0) m.delete(symbol);
    expected.set(id, m);
  };
  for (const f of fills) add(f.client_id, f.symbol, f.quantity);
  for (const [id, deltas] of conversions) for (const [s, d] of deltas) add(id, s, d);
  return expected;
}

/** UNDY's components, 3..12, each with `q`. */
export const undyBasket = (q: number): Record<number, number> => Object.fromEntries([3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((s) => [s, q]));

/** Small HTTP client over fetch. */
/** HTTP calls to the gateway at `base`, or to each of several in turn (round robin). */
export function api(base: string | string[]) {
  const bases = Array.isArray(base) ? base : [base];
  let turn = 0;
  const send = async (method: string, path: string, opts: { form?: Record<string, string | number>; json?: unknown; basic?: [string, string]; query?: Record<string, string>; headers?: Record<string, string>; raw?: string } = {}) => {
    const headers: Record<string, string> = { ...opts.headers };
    let body: string | undefined;
    if (opts.form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(Object.entries(opts.form).map(([k, v]) => [k, String(v)])).toString();
    } else if (opts.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.json);
    } else if (opts.raw !== undefined) {
      body = opts.raw;
    }
    if (opts.basic) headers.authorization = `Basic ${Buffer.from(`${opts.basic[0]}:${opts.basic[1]}`).toString('base64')}`;
    const qs = opts.query ? `?${new URLSearchParams(opts.query)}` : '';
    const res = await fetch(`${bases[turn++ % bases.length]}${path}${qs}`, { method, headers, body });
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      throw new Error(`${method} ${path}: response is not JSON (${res.status}): ${text.slice(0, 200)}`);
    }
    return { status: res.status, body: json, headers: res.headers };
  };
  return {
    send,
    register: (username: string, password: string) => send('POST', '/register', { form: { username, password } }),
    /** One unit created or redeemed under `key`, as a retrying client sends it: the status, or 0 when no answer came (connection refused or cut). */
    convertOnce: (path: '/create' | '/redeem', username: string, password: string, key: string) =>
      send('POST', path, { basic: [username, password], json: { amount: 1, request_id: key } }).then(
        (r) => r.status,
        () => 0,
      ),
    create: (u: string, p: string, amount: number | string, etf_name?: string) =>
      send('POST', '/create', { form: { username: u, password: p, amount, ...(etf_name ? { etf_name } : {}) } }),
    redeem: (u: string, p: string, amount: number | string, etf_name?: string) =>
      send('POST', '/redeem', { form: { username: u, password: p, amount, ...(etf_name ? { etf_name } : {}) } }),
    holdings: async (u: string, p: string) => send('GET', '/holdings', { query: { username: u, password: p } }),
  };
}

/**
 * A nats-server with the fill stream, a data directory, and a client whose JetStream stores fills as a bridge
 * does; what to undo goes onto `cleanups` (run in reverse after each test).
 */
export async function fillStreamWorld(cleanups: Array<() => Promise<unknown> | unknown>) {
  const nats = await startTestNats();
  cleanups.push(() => nats.stop(), () => nats.remove());
  const dir = tempDir();
  cleanups.push(() => dir.remove());
  const nc = await natsClient(nats.url);
  cleanups.push(() => nc.close());
  await ensureFillStream(nc);
  return { nats, dir, nc, js: jetstream(nc) };
}

/** Polls `check` on each NATS round trip until it holds (event-driven waits belong to the caller; this bounds them). */
export async function until<T>(check: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A file's own nats-server (temporary store) and a client of it, started in beforeAll and stopped in afterAll. */
export function useTestNats(): { nats: Awaited<ReturnType<typeof startTestNats>>; nc: NatsConnection } {
  const f = {} as { nats: Awaited<ReturnType<typeof startTestNats>>; nc: NatsConnection };
  beforeAll(async () => {
    f.nats = await startTestNats();
    f.nc = await natsClient(f.nats.url);
  });
  afterAll(async () => {
    await f.nc?.close();
    await f.nats?.stop();
    f.nats?.remove();
  });
  return f;
}

export interface SystemFixture {
  nats: Awaited<ReturnType<typeof startTestNats>>;
  dir: ReturnType<typeof tempDir>;
  sys: TestSystem;
  nc: NatsConnection;
  http: ReturnType<typeof api>;
}

/**
 * A file's shared system: a real nats-server, engine and gateway started in
 * beforeAll and stopped in afterAll. The fields are filled in once beforeAll ran.
 * With `engine: {shards}` in the overrides, an engine per shard; with several
 * gateways, `http` takes turns between them. `desk`: the desk's writer too
 * (what the pricing service runs), for the charts and scorecards.
 */
export function useSystem(overrides: Parameters<typeof testConfig>[1] = {}, gateways = 1, opts: { desk?: boolean } = {}): SystemFixture {
  const f = {} as SystemFixture;
  beforeAll(async () => {
    f.nats = await startTestNats();
    f.dir = tempDir();
    f.sys = await startSystem(f.nats.url, testConfig(f.dir.path, overrides), gateways, opts);
    f.nc = await natsClient(f.nats.url);
    f.http = api(f.sys.urls);
  });
  afterAll(async () => {
    await f.nc?.close();
    await f.sys?.close();
    await f.nats?.stop();
    f.nats?.remove();
    f.dir?.remove();
  });
  return f;
}

/** Buys `quantities` for the account on the exchange and waits until the engine has applied (and published) them all. */
export async function buy(nc: NatsConnection, clientId: number, quantities: Record<number, number>, publisher: NatsConnection = nc): Promise<void> {
  const fills = fillsFor(clientId, quantities);
  const seen = awaitHoldingsSeq(nc, clientId, fills.length);
  await publishFills(publisher, fills);
  await seen;
}
