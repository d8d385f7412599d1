/**
 * WebSocket holdings stream: fill-to-client latency and delivered deltas/s
 * with 1,000 connected clients (10 accounts × 100 connections each).
 *
 *   this process --multicast clearing datagram--> feed bridge (process)
 *     --JetStream NDFEX_FILLS--> engine (process) --etf.notices.<shard>-->
 *     gateway (process) --/ws delta--> 1,000 `ws` clients (this process)
 *
 * Latency: from just before the datagram is sent to the delta's arrival at
 * a client (same clock: both ends live in this process). Two loads:
 *  - ping-pong: one fill at a time; the next once every client of that
 *    account has the delta (unloaded latency, fan-out to 100 included);
 *  - steady: BENCH_STEADY_RATE fills/s for 2 s (10 per datagram), below
 *    what the engine absorbs, so latency is the fan-out's under load, not
 *    the upstream queue's (1,000 fills/s = 100,000 deltas/s with 1,000 clients);
 *  - burst: BENCH_BURST fills as fast as the sender goes (10 per datagram),
 *    round-robin over the accounts: deltas/s delivered across all clients
 *    (first send to last arrival); its latency is mostly the fills queueing
 *    upstream of the gateway (the sender outruns the engine).
 * Baseline in the same run: the same two loads with 1 client (account 1).
 * The clients read the seq out of the text frame instead of JSON.parse-ing
 * 1 M frames, so the bench measures the gateway, not the clients' parser.
 *
 * Run: npx tsc -p . && node dist/bench/ws.js
 *   BENCH_PINGS  fills in the ping-pong phase (default 300)
 *   BENCH_BURST  fills in the burst phase     (default 5000)
 *   BENCH_STEADY_RATE fills/s in the steady phase (default 1000)
 */
import { serviceNodeFlags, startService, type ServiceKind, type ServiceProcess } from '../src/shared/service-process.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { PROJECT_ROOT } from '../src/config/config.js';
import { freePort, startNatsServer } from '../src/launcher/nats-server.js';
import { multicastSender } from '../src/feed/multicast.js';
import { benchConfig, benchRoster } from './system.js';
import { encodeClearingDatagram, type ClearingMessage } from '../proto/ndfex.js';

const ACCOUNTS = 10;
const PER_ACCOUNT = 100;
const PINGS = Number(process.env.BENCH_PINGS ?? 300);
const BURST = Number(process.env.BENCH_BURST ?? 5000);
const STEADY_RATE = Number(process.env.BENCH_STEADY_RATE ?? 1000);
const STEADY_FILLS = STEADY_RATE * 2;
const PER_DATAGRAM = 10;
/** No delta for this long while some are missing: report what arrived. */
const STALL_MS = 5000;
const BUDGET_MS = 115_000;

const t0 = Date.now();
const dir = mkdtempSync(join(tmpdir(), 'etf-bench-ws-'));
const children: ServiceProcess<unknown>[] = [];
const named = new Map<string, ServiceProcess<unknown>>();

/** CPU seconds (user + system) a child has used so far, from /proc (Linux). */
function cpuOf({ child }: ServiceProcess<unknown>): number {
  try {
    const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return NaN;
  }
}
const benchCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
function cpuSnapshot(): Record<string, number> {
  const out: Record<string, number> = { clients: benchCpu() };
  for (const [name, c] of named) out[name] = cpuOf(c);
  return out;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const nats = await startNatsServer({ port: await freePort(), storeDir: join(dir, 'nats') });
const cleanup = async () => {
  await Promise.all(children.map((c) => c.stop()));
  await nats.stop();
  rmSync(dir, { recursive: true, force: true });
};
const budget = setTimeout(() => {
  process.stderr.write(`bench: over its ${BUDGET_MS / 1000} s budget, stopping\n`);
  void cleanup().finally(() => process.exit(1));
}, BUDGET_MS);
budget.unref();

// ------------------------------------------------------------------ the system, as separate processes
const httpPort = await freePort();
const cfg = benchConfig(dir, nats, benchRoster(ACCOUNTS), { http: { host: '127.0.0.1', port: httpPort, maxBodyBytes: 16384 }, bcryptRounds: 4 });
const configFile = join(dir, 'config.json');
writeFileSync(configFile, JSON.stringify(cfg));

const rnd = () => 1 + Math.floor(Math.random() * 254);
const group = `239.${rnd()}.${rnd()}`;
const mcPort = 20_000 + Math.floor(Math.random() * 20_000);
const clearingAddr = { group: `${group}.2`, port: mcPort };

/** A service as the launcher runs it (its Node flags included). */
async function run(name: string, kind: ServiceKind, env: Record<string, string>): Promise<void> {
  const service = await startService({
    name,
    args: [...serviceNodeFlags(kind), join(PROJECT_ROOT, 'dist/src', kind, 'main.js')],
    env: { ...process.env, ...env },
    ready: 'message',
    onLine: (l) => (l.includes('"level":40') || l.includes('"level":50') || l.includes('"level":60')) && process.stderr.write(`${name}: ${l}\n`),
  });
  children.push(service);
  named.set(name, service);
}

const common = { NATS_URL: nats.url, CONFIG_FILE: configFile, LOG_LEVEL: 'info' };
await run('engine', 'engine', common);
await run('gateway', 'gateway', common);
await run('bridge', 'feed', {
  NATS_URL: nats.url,
  NDFEX_CLEARING_ADDR: `${clearingAddr.group}:${clearingAddr.port}`,
  NDFEX_MD_ADDR: `${group}.1:${mcPort + 1}`,
  NDFEX_SNAPSHOT_ADDR: `${group}.3:${mcPort + 1}`,
  NDFEX_INTERFACE: '127.0.0.1',
  NDFEX_SESSION: 'bench-ws',
  LOG_LEVEL: 'info',
});
const sender = await multicastSender('127.0.0.1');

// ------------------------------------------------------------------ clients
/** Clearing seq → when its datagram left. */
const sentAt = new Map<number, number>();
let clearingSeq = 0;

interface Phase {
  latencies: number[];
  delivered: number;
  firstSend: number;
  lastArrival: number;
  /** Called on every arrival: ping-pong waits on it. */
  onArrival?: (account: number, fillSeq: number) => void;
}
let phase: Phase | undefined;

const DELTA_HEAD = /^\{"v":1,"type":"delta","client_id":(\d+),"seq":(\d+)/;
const FILL_TAIL = /"fill":\{"seq":(\d+),/;

class Client {
  seq = -1;
  gaps = 0;
  resyncs = 0;
  ready: Promise<void>;
  readonly ws: WebSocket;
  constructor(readonly account: number) {
    const auth = `Basic ${Buffer.from(`team${account}:team${account}pass`).toString('base64')}`;
    this.ws = new WebSocket(`ws://127.0.0.1:${httpPort}/ws`, { headers: { authorization: auth }, perMessageDeflate: false });
    this.ready = new Promise((resolve, reject) => {
      this.ws.once('error', reject);
      this.ws.once('close', (code, reason) => reject(new Error(`closed ${code} ${reason.toString()}`)));
      this.ws.on('message', (data: Buffer) => {
        const text = data.toString('utf8');
        const head = DELTA_HEAD.exec(text);
        if (head) {
          const now = performance.now();
          const seq = Number(head[2]);
          if (seq !== this.seq + 1) this.gaps++;
          this.seq = seq;
          const fill = FILL_TAIL.exec(text);
          if (fill && phase) {
            const fillSeq = Number(fill[1]);
            const at = sentAt.get(fillSeq);
            if (at !== undefined) phase.latencies.push(now - at);
            phase.delivered++;
            phase.lastArrival = now;
            phase.onArrival?.(this.account, fillSeq);
          }
          return;
        }
        const msg = JSON.parse(text) as { type: string; seq?: number; reason?: string };
        if (msg.type === 'snapshot') {
          if (msg.reason === 'resync') this.resyncs++;
          this.seq = msg.seq!;
          resolve();
        }
      });
    });
  }
}

function fillFor(account: number): ClearingMessage {
  clearingSeq++;
  return { type: 'fill', seq: clearingSeq, client_id: account, symbol: 3 + (clearingSeq % 10), quantity: 1, price: 100, side: clearingSeq % 2 ? 1 : 2 };
}

async function send(fills: ClearingMessage[]): Promise<void> {
  const now = performance.now();
  for (const f of fills) sentAt.set(f.seq, now);
  await sender.send(clearingAddr, encodeClearingDatagram(fills));
}

/** Resolves when `count()` reaches `target`, or after STALL_MS without progress. */
async function settle(count: () => number, target: number): Promise<boolean> {
  let last = count();
  let moved = performance.now();
  while (count() < target) {
    await sleep(5);
    const c = count();
    if (c !== last) {
      last = c;
      moved = performance.now();
    } else if (performance.now() - moved > STALL_MS) return false;
  }
  return true;
}

/** One fill at a time, round-robin over `accounts`; the next when all `perAccount` clients of the account have it. */
async function pingPong(accounts: number, perAccount: number, n: number): Promise<Phase> {
  const p: Phase = { latencies: [], delivered: 0, firstSend: performance.now(), lastArrival: 0 };
  phase = p;
  for (let i = 0; i < n; i++) {
    const account = 1 + (i % accounts);
    const fill = fillFor(account);
    let got = 0;
    const done = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), STALL_MS);
      p.onArrival = (_a, seq) => {
        if (seq === fill.seq && ++got === perAccount) {
          clearTimeout(timer);
          resolve(true);
        }
      };
    });
    await send([fill]);
    if (!(await done)) {
      process.stderr.write(`ping-pong: fill ${fill.seq} reached ${got}/${perAccount} clients in ${STALL_MS} ms\n`);
      break;
    }
  }
  p.onArrival = undefined;
  phase = undefined;
  return p;
}

/** `n` fills at `rate` fills/s (datagrams of PER_DATAGRAM every PER_DATAGRAM/rate s): latency under a load the pipeline can carry. */
async function steady(accounts: number, perAccount: number, n: number, rate: number): Promise<Phase & { complete: boolean }> {
  const p: Phase = { latencies: [], delivered: 0, firstSend: performance.now(), lastArrival: 0 };
  phase = p;
  const interval = (PER_DATAGRAM / rate) * 1000;
  for (let i = 0; i < n; i += PER_DATAGRAM) {
    const due = p.firstSend + (i / PER_DATAGRAM) * interval;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    const batch: ClearingMessage[] = [];
    for (let j = i; j < Math.min(n, i + PER_DATAGRAM); j++) batch.push(fillFor(1 + (j % accounts)));
    await send(batch);
  }
  const complete = await settle(() => p.delivered, n * perAccount);
  phase = undefined;
  return { ...p, complete };
}

async function burst(accounts: number, perAccount: number, n: number): Promise<Phase & { complete: boolean; sendMs: number }> {
  const p: Phase = { latencies: [], delivered: 0, firstSend: performance.now(), lastArrival: 0 };
  phase = p;
  for (let i = 0; i < n; i += PER_DATAGRAM) {
    const batch: ClearingMessage[] = [];
    for (let j = i; j < Math.min(n, i + PER_DATAGRAM); j++) batch.push(fillFor(1 + (j % accounts)));
    await send(batch);
  }
  const sendMs = performance.now() - p.firstSend;
  const complete = await settle(() => p.delivered, n * perAccount);
  phase = undefined;
  return { ...p, complete, sendMs };
}

const pct = (xs: number[], q: number): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

interface Result {
  label: string;
  clients: number;
  pingP50: number;
  pingP99: number;
  steadyP50: number;
  steadyP99: number;
  steadyRate: number;
  burstP50: number;
  burstP99: number;
  deltasPerS: number;
  fillsPerS: number;
  delivered: number;
  expected: number;
  /** CPU seconds per process over the steady + burst phases. */
  cpu: Record<string, number>;
  /** Deltas delivered over the steady + burst phases. */
  deliveredAll: number;
  wallS: number;
}

async function measure(label: string, clients: Client[], accounts: number, perAccount: number): Promise<Result> {
  const ping = await pingPong(accounts, perAccount, PINGS);
  const cpu0 = cpuSnapshot();
  const wall0 = performance.now();
  const st = await steady(accounts, perAccount, STEADY_FILLS, STEADY_RATE);
  if (!st.complete) process.stderr.write(`${label}: steady delivered ${st.delivered}/${STEADY_FILLS * perAccount} deltas\n`);
  const b = await burst(accounts, perAccount, BURST);
  const seconds = (b.lastArrival - b.firstSend) / 1000;
  const cpu1 = cpuSnapshot();
  const cpu = Object.fromEntries(Object.keys(cpu1).map((k) => [k, cpu1[k]! - cpu0[k]!]));
  if (!b.complete) process.stderr.write(`${label}: burst delivered ${b.delivered}/${BURST * perAccount} deltas (stale clients get a snapshot instead)\n`);
  return {
    label,
    clients: clients.length,
    pingP50: pct(ping.latencies, 0.5),
    pingP99: pct(ping.latencies, 0.99),
    steadyP50: pct(st.latencies, 0.5),
    steadyP99: pct(st.latencies, 0.99),
    steadyRate: st.delivered / ((st.lastArrival - st.firstSend) / 1000),
    burstP50: pct(b.latencies, 0.5),
    burstP99: pct(b.latencies, 0.99),
    deltasPerS: b.delivered / seconds,
    fillsPerS: BURST / seconds,
    delivered: b.delivered,
    expected: BURST * perAccount,
    cpu,
    deliveredAll: st.delivered + b.delivered,
    wallS: (performance.now() - wall0) / 1000,
  };
}

try {
  // Warm-up: the whole path once (JIT, bcrypt cache, consumers).
  const solo = new Client(1);
  await solo.ready;
  await pingPong(1, 1, 50);
  const base = await measure('baseline', [solo], 1, 1);
  solo.ws.close();

  const connectStart = performance.now();
  const clients: Client[] = [];
  for (let a = 1; a <= ACCOUNTS; a++) for (let k = 0; k < PER_ACCOUNT; k++) clients.push(new Client(a));
  await Promise.all(clients.map((c) => c.ready));
  const connectMs = performance.now() - connectStart;
  await pingPong(ACCOUNTS, PER_ACCOUNT, 20);
  const loaded = await measure(`${ACCOUNTS}×${PER_ACCOUNT}`, clients, ACCOUNTS, PER_ACCOUNT);

  const gaps = clients.reduce((s, c) => s + c.gaps, 0);
  const resyncs = clients.reduce((s, c) => s + c.resyncs, 0);
  const ms = (x: number) => `${x.toFixed(2)} ms`;
  const rows: [string, (r: Result) => string, (b: Result, l: Result) => string][] = [
    ['clients', (r) => String(r.clients), () => ''],
    ['ping-pong latency p50', (r) => ms(r.pingP50), (b, l) => `${(l.pingP50 / b.pingP50).toFixed(2)}×`],
    ['ping-pong latency p99', (r) => ms(r.pingP99), (b, l) => `${(l.pingP99 / b.pingP99).toFixed(2)}×`],
    [`steady ${STEADY_RATE} fills/s latency p50`, (r) => ms(r.steadyP50), (b, l) => `${(l.steadyP50 / b.steadyP50).toFixed(2)}×`],
    [`steady latency p99`, (r) => ms(r.steadyP99), (b, l) => `${(l.steadyP99 / b.steadyP99).toFixed(2)}×`],
    [`steady deltas/s delivered`, (r) => r.steadyRate.toFixed(0), (b, l) => `${(l.steadyRate / b.steadyRate).toFixed(1)}×`],
    [`burst (${BURST} fills) latency p50`, (r) => ms(r.burstP50), (b, l) => `${(l.burstP50 / b.burstP50).toFixed(2)}×`],
    [`burst latency p99`, (r) => ms(r.burstP99), (b, l) => `${(l.burstP99 / b.burstP99).toFixed(2)}×`],
    ['burst fills/s through', (r) => r.fillsPerS.toFixed(0), (b, l) => `${(l.fillsPerS / b.fillsPerS).toFixed(2)}×`],
    ['burst deltas/s delivered', (r) => r.deltasPerS.toFixed(0), (b, l) => `${(l.deltasPerS / b.deltasPerS).toFixed(1)}×`],
    ['deltas delivered / expected', (r) => `${r.delivered}/${r.expected}`, () => ''],
    ...['gateway', 'engine', 'bridge', 'clients'].map(
      (k): [string, (r: Result) => string, (b: Result, l: Result) => string] => [
        `CPU s ${k} (steady+burst)`,
        (r) => `${r.cpu[k]!.toFixed(2)}/${r.wallS.toFixed(1)}`,
        (b, l) => `${(l.cpu[k]! / b.cpu[k]!).toFixed(1)}×`,
      ],
    ),
    ['gateway CPU µs per delta delivered', (r) => ((r.cpu.gateway! / r.deliveredAll) * 1e6).toFixed(2), (b, l) => `${(l.cpu.gateway! / l.deliveredAll / (b.cpu.gateway! / b.deliveredAll)).toFixed(2)}×`],
  ];
  const w = [34, 14, 14, 8];
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  console.log(`\nWebSocket holdings stream: multicast fill -> bridge -> engine -> gateway -> ws client (${ACCOUNTS} accounts x ${PER_ACCOUNT} connections)`);
  console.log(line(['', 'baseline', 'loaded', 'ratio']));
  for (const [name, f, ratio] of rows) console.log(line([name, f(base), f(loaded), ratio(base, loaded)]));
  console.log(`\n${clients.length} connections authenticated and snapshotted in ${connectMs.toFixed(0)} ms; seq gaps seen by clients: ${gaps}; resync snapshots (stale clients): ${resyncs}; run ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  for (const c of clients) c.ws.terminate();
} finally {
  await sender.close();
  await cleanup();
  clearTimeout(budget);
}
