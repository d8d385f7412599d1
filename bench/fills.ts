/**
 * Fills per second from NDFEX multicast to engine state, with zero loss.
 *
 *   sender (this process) --multicast--> feed bridge (its own process)
 *     --JetStream NDFEX_FILLS--> engine (this process, startEngine)
 *
 * Steps through increasing send rates; at each, sends for BENCH_SECONDS,
 * waits until the engine has applied every fill (or stops progressing), and
 * checks every account's positions against the sum of the fills sent: equal
 * means each fill was applied exactly once. Where fills went missing, the
 * table says where: the sender's socket (send errors), the bridge socket's
 * kernel queue (/proc/net/udp drops), or neither.
 *
 * Baseline, in the same run: the engine's own ceiling, i.e. how fast it
 * applies fills already stored in JetStream (its catch-up at start), so the
 * ratio column is the share of the engine's ceiling the multicast path reaches.
 *
 * The machine is shared: other load shows up as lower and noisier figures
 * (the load average is printed with the table).
 *
 * Run: npm run bench:fills
 *   BENCH_RATES        fills/s ladder          (default 5000,10000,20000,50000,100000)
 *   BENCH_PER_DATAGRAM fills per datagram list (default 1,10: one ladder each)
 *   BENCH_SECONDS      send time per step      (default 2)
 *   BENCH_STANDBY      1 (default): the standby bridge runs beside the bridge, as npm start runs it;
 *                      each step prints both processes' CPU per fill (0: the bridge alone)
 */
import { serviceNodeFlags, startService, type ServiceProcess } from '../src/shared/service-process.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSocket } from 'node:dgram';
import { jetstream } from '@nats-io/jetstream';
import { PROJECT_ROOT } from '../src/config/config.js';
import { testConfig } from '../test/helpers/system.js';
import { freePort, startNatsServer } from '../src/launcher/nats-server.js';
import { startEngine, type EngineHandle } from '../src/engine/service.js';
import { position, positionList } from '../src/engine/state.js';
import { createLogger } from '../src/shared/log.js';
import { connectNats } from '../src/shared/nats.js';
import { ensureFillStream } from '../src/shared/streams.js';
import { readFileSync } from 'node:fs';
import { encode, decode } from '../proto/codec.js';
import { decodeClearingDatagram, encodeClearingDatagram, type ClearingMessage } from '../proto/ndfex.js';
import { fillMsgId, fillSubject } from '../proto/subjects.js';
import { FEED_STATUS_SUBJECT, type FeedStatus } from '../proto/marketdata.js';
import { cpuMeter } from './cpu.js';
import type { Fill } from '../proto/fill.js';

const RATES = (process.env.BENCH_RATES ?? '5000,10000,20000,50000,100000').split(',').map(Number);
const PER_DATAGRAM = (process.env.BENCH_PER_DATAGRAM ?? '1,10').split(',').map(Number);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const STANDBY = process.env.BENCH_STANDBY !== '0';
const BASELINE_FILLS = 50_000;
const CLIENTS = 16;
/** No engine progress for this long with fills outstanding: they are lost. */
const STALL_MS = 3000;
/** Hard cap on the whole run. */
const BUDGET_MS = 110_000;

const t0 = Date.now();
const log = createLogger('bench', 'warn');
const dir = mkdtempSync(join(tmpdir(), 'etf-bench-fills-'));
const nats = await startNatsServer({ port: await freePort(), storeDir: join(dir, 'nats') });
// The tests' config (fast bcrypt, files in `dir`), so a new config field never breaks the bench.
const cfg = testConfig(dir, { roster: Array.from({ length: CLIENTS }, (_, i) => `${i + 1} team${i + 1} team${i + 1}pass`).join('\n') });

const nc = await connectNats(nats.url, 'bench-fills');
await ensureFillStream(nc);

// Positions the engine must end with: client → symbol → quantity.
const expected = new Map<number, Map<number, number>>();
let seq = 0;
function nextFill(): Fill {
  seq++;
  const f: Fill = { seq, client_id: 1 + (seq % CLIENTS), symbol: 3 + (seq % 10), side: seq % 3 === 0 ? 2 : 1, quantity: 1 + (seq % 7), price: 100 };
  const m = expected.get(f.client_id) ?? new Map<number, number>();
  expected.set(f.client_id, m);
  m.set(f.symbol, (m.get(f.symbol) ?? 0) + (f.side === 1 ? f.quantity : -f.quantity));
  return f;
}

let engine!: EngineHandle;

function positionsMatch(): boolean {
  for (const [client, want] of expected) {
    const acc = engine.state.accounts.get(client);
    if (!acc) return false;
    for (const [symbol, q] of want) if (position(acc, symbol) !== q) return false;
    for (const [symbol, q] of positionList(acc)) if ((want.get(symbol) ?? 0) !== q) return false;
  }
  return true;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until the engine applied `target` fills, or made no progress for STALL_MS. Returns the time it reached it. */
async function drained(target: number): Promise<{ ok: boolean; at: number }> {
  let last = engine.fills.applied;
  let lastMove = performance.now();
  for (;;) {
    const a = engine.fills.applied;
    if (a >= target) return { ok: true, at: performance.now() };
    if (a !== last) {
      last = a;
      lastMove = performance.now();
    } else if (performance.now() - lastMove > STALL_MS) return { ok: false, at: performance.now() };
    await sleep(2);
  }
}

/** Waits until neither the bridge's counters nor the engine moved for 2 s (a saturated bridge publishes its status late) (at most 15 s). */
async function quiet(): Promise<void> {
  const mark = () => `${engine.fills.applied}/${lastStatus?.clearing.messages}/${lastStatus?.clearing.missed_messages}`;
  let m = mark();
  let since = performance.now();
  const end = performance.now() + 15_000;
  while (performance.now() < end && performance.now() - since < 2000) {
    await sleep(50);
    const n = mark();
    if (n !== m) {
      m = n;
      since = performance.now();
    }
  }
}

// ------------------------------------------------------------------ baseline
/** Stores BASELINE_FILLS in the fill stream, then starts the engine and times its catch-up over them. */
async function baseline(): Promise<number> {
  const js = jetstream(nc);
  let inFlight = 0;
  let sent = 0;
  await new Promise<void>((resolve, reject) => {
    const pump = () => {
      while (inFlight < 512 && sent < BASELINE_FILLS) {
        const f = nextFill();
        sent++;
        inFlight++;
        js.publish(fillSubject(f.client_id), encode(f), { msgID: fillMsgId('baseline', f.seq) }).then(() => {
          inFlight--;
          if (sent === BASELINE_FILLS && inFlight === 0) resolve();
          else pump();
        }, reject);
      }
    };
    pump();
  });
  const start = performance.now();
  engine = await startEngine(cfg, nats.url, log, (err) => {
    throw err;
  });
  const d = await drained(BASELINE_FILLS);
  if (!d.ok || !positionsMatch()) throw new Error('baseline: the engine did not apply every fill exactly once');
  return BASELINE_FILLS / ((d.at - start) / 1000);
}

// ------------------------------------------------------------------ bridge
const rnd = () => 1 + Math.floor(Math.random() * 254);
const group = `239.${rnd()}.${rnd()}.2`;
const port = 20_000 + Math.floor(Math.random() * 20_000);
let lastStatus: FeedStatus | undefined;
nc.subscribe(FEED_STATUS_SUBJECT, { callback: (_e, m) => {
    const status = decode<FeedStatus & { role?: string }>(m.data);
    // The standby's status shares the subject.
    if (status.role === undefined) lastStatus = status;
  },
});

function startBridgeProcess(role: 'bridge' | 'standby' = 'bridge'): Promise<ServiceProcess<unknown>> {
  const env = {
    NDFEX_FEED_ROLE: role,
    ...process.env,
    NATS_URL: nats.url,
    NDFEX_CLEARING_ADDR: `${group}:${port}`,
    NDFEX_MD_ADDR: `${group.replace(/\.2$/, '.1')}:${port + 1}`,
    NDFEX_SNAPSHOT_ADDR: `${group.replace(/\.2$/, '.3')}:${port + 1}`,
    NDFEX_INTERFACE: '127.0.0.1',
    NDFEX_SESSION: 'bench',
    NDFEX_STATUS_INTERVAL_MS: '200',
    LOG_LEVEL: 'info',
  };
  return startService({
    name: role === 'bridge' ? 'feed bridge' : 'standby bridge',
    // As the launcher runs it, with its Node flags.
    args: [...serviceNodeFlags('feed'), join(PROJECT_ROOT, 'dist/src/feed/main.js')],
    env,
    ready: 'message',
    onLine: (l) => (l.includes('"level":40') || l.includes('"level":50')) && process.stderr.write(`bridge: ${l}\n`),
  });
}

const sock = createSocket({ type: 'udp4' });
await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
sock.setMulticastInterface('127.0.0.1');
sock.setMulticastLoopback(true);
sock.setMulticastTTL(1);

let sendErrors = 0;
const onSent = (err: Error | null) => {
  if (err) sendErrors++;
};

/** Datagrams the kernel dropped on the bridge's socket (it binds group:port): the drops column of /proc/net/udp. */
function kernelDrops(): number | null {
  try {
    const hex = (n: number, w: number) => n.toString(16).toUpperCase().padStart(w, '0');
    const [a, b, c, d] = group.split('.').map(Number) as [number, number, number, number];
    const local = `${hex(d, 2)}${hex(c, 2)}${hex(b, 2)}${hex(a, 2)}:${hex(port, 4)}`;
    let drops = 0;
    for (const line of readFileSync('/proc/net/udp', 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f[1] === local) drops += Number(f[f.length - 1]);
    }
    return drops;
  } catch {
    return null;
  }
}

interface Row {
  rate: number;
  perDatagram: number;
  sent: number;
  sendRate: number;
  applied: number;
  gaps: number;
  sendErrors: number;
  kernelDrops: number | null;
  exact: boolean;
  e2eRate: number;
  drainMs: number;
  /** CPU µs per fill sent, of the bridge and (when it runs) the standby, over the step and its drain. */
  bridgeUs: number;
  standbyUs: number | null;
}

async function step(rate: number, perDatagram: number): Promise<Row> {
  const total = Math.round(rate * SECONDS);
  const appliedBefore = engine.fills.applied;
  const missedBefore = lastStatus?.clearing.missed_messages ?? 0;
  const sendErrorsBefore = sendErrors;
  const dropsBefore = kernelDrops();
  const cpu = cpuMeter({ bridge: bridge!.child.pid!, ...(standby ? { standby: standby.child.pid! } : {}) });
  let sent = 0;
  const start = performance.now();
  while (sent < total) {
    const due = Math.min(total, Math.ceil((rate * (performance.now() - start)) / 1000) + perDatagram);
    while (sent < due) {
      const n = Math.min(perDatagram, total - sent);
      const msgs: ClearingMessage[] = [];
      for (let i = 0; i < n; i++) msgs.push({ type: 'fill', ...nextFill() });
      sock.send(encodeClearingDatagram(msgs), port, group, onSent);
      sent += n;
    }
    await new Promise((r) => setImmediate(r));
  }
  const sendEnd = performance.now();
  const d = await drained(appliedBefore + total);
  const applied = engine.fills.applied - appliedBefore;
  // Wait for a status that has heard the step's last fill, so its gap counters include this step.
  for (let i = 0; i < 200 && (lastStatus?.clearing.last_seq ?? 0) < seq; i++) await sleep(10);
  const used = cpu();
  const usPerFill = (t?: { user: number; system: number }) => (t ? ((t.user + t.system) * 1e6) / Math.max(1, sent) : null);
  return {
    rate,
    perDatagram,
    sent,
    sendRate: sent / ((sendEnd - start) / 1000),
    applied,
    gaps: (lastStatus?.clearing.missed_messages ?? 0) - missedBefore,
    sendErrors: sendErrors - sendErrorsBefore,
    kernelDrops: dropsBefore === null ? null : (kernelDrops() ?? 0) - dropsBefore,
    exact: d.ok && applied === total && positionsMatch(),
    e2eRate: applied / ((d.at - start) / 1000),
    drainMs: d.at - sendEnd,
    bridgeUs: usPerFill(used.bridge)!,
    standbyUs: usPerFill(used.standby),
  };
}

/** Clearing messages decoded per second, one thread, 10-fill datagrams: the codec's share of the budget. */
function decodeRate(): number {
  const dgram = encodeClearingDatagram(Array.from({ length: 10 }, (_, i): ClearingMessage => ({ type: 'fill', seq: i + 1, client_id: 1, symbol: 3, quantity: 1, price: 100, side: 1 })));
  let n = 0;
  const start = performance.now();
  while (performance.now() - start < 500) for (let i = 0; i < 1000; i++) n += decodeClearingDatagram(dgram).messages.length;
  return n / ((performance.now() - start) / 1000);
}

const rows: Row[] = [];
const decoded = decodeRate();
let bridge: ServiceProcess<unknown> | undefined;
let standby: ServiceProcess<unknown> | undefined;
let base = 0;
try {
  base = await baseline();
  bridge = await startBridgeProcess();
  if (STANDBY) standby = await startBridgeProcess('standby');
  await nc.flush();
  ladders: for (const perDatagram of PER_DATAGRAM) {
    for (const rate of RATES) {
      if (Date.now() - t0 > BUDGET_MS - (SECONDS * 1000 + STALL_MS + 2000)) {
        console.log(`(time budget reached: skipping the rest)`);
        break ladders;
      }
      const row = await step(rate, perDatagram);
      rows.push(row);
      console.log(
        `${perDatagram}/datagram @ ${rate}/s: sent ${row.sent} (${Math.round(row.sendRate)}/s), applied ${row.applied}, missed ${row.gaps} (send errors ${row.sendErrors}, kernel drops ${row.kernelDrops ?? '-'}), ${row.exact ? 'exact' : 'LOSS'}`,
      );
      if (!row.exact) {
        // Positions are off from here on: let the bridge and engine go quiet, take what the engine
        // holds as the new expectation (so the next ladder starts clean), then stop this ladder.
        await quiet();
        for (const [client, m] of expected) {
          m.clear();
          const acc = engine.state.accounts.get(client);
          for (const [s, q] of acc ? positionList(acc) : []) m.set(s, q);
        }
        break;
      }
    }
  }
} finally {
  await standby?.stop();
  await bridge?.stop();
  sock.close();
  await engine.close();
  await nc.close();
  await nats.stop();
  rmSync(dir, { recursive: true, force: true });
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
console.log(`\ncodec: ${fmt(decoded)} clearing messages decoded per second (one core, 10 per datagram)`);
console.log(`baseline (the engine applying fills already in JetStream, its catch-up): ${fmt(base)} fills/s\n`);
console.log('missed: fills the bridge saw as seq gaps; in brackets, datagrams the sender failed to send / the kernel dropped at the bridge socket');
console.log(`CPU µs/fill: the bridge's${STANDBY ? ", and the standby bridge's beside it (and its share of the bridge's)" : ' (BENCH_STANDBY=0: no standby)'}, over each step and its drain`);
console.log('fills/dgram | target/s | sent/s  |    sent | applied | missed (send err / kernel drops) | exactly once | multicast→engine /s | of baseline | drain ms | CPU µs/fill bridge, standby');
console.log('------------|----------|---------|---------|---------|----------------------------------|--------------|---------------------|-------------|----------|----------------------------');
for (const r of rows) {
  console.log(
    [
      String(r.perDatagram).padStart(11),
      fmt(r.rate).padStart(8),
      fmt(r.sendRate).padStart(7),
      fmt(r.sent).padStart(7),
      fmt(r.applied).padStart(7),
      `${fmt(r.gaps)} (${fmt(r.sendErrors)} / ${r.kernelDrops === null ? '-' : fmt(r.kernelDrops)})`.padStart(32),
      (r.exact ? 'yes' : 'NO').padStart(12),
      fmt(r.e2eRate).padStart(19),
      `${(r.e2eRate / base).toFixed(2)}x`.padStart(11),
      fmt(r.drainMs).padStart(8),
      `${r.bridgeUs.toFixed(1)}${r.standbyUs === null ? '' : `, ${r.standbyUs.toFixed(1)} (${(r.standbyUs / r.bridgeUs).toFixed(2)}x)`}`,
    ].join(' | '),
  );
}
for (const perDatagram of PER_DATAGRAM) {
  const ok = rows.filter((r) => r.perDatagram === perDatagram && r.exact);
  const best = ok.reduce<Row | undefined>((b, r) => (!b || r.rate > b.rate ? r : b), undefined);
  console.log(
    best
      ? `\n${perDatagram} fill(s)/datagram: highest rate with zero loss ${fmt(best.rate)} fills/s (measured ${fmt(best.e2eRate)} fills/s multicast→engine)`
      : `\n${perDatagram} fill(s)/datagram: no rate without loss`,
  );
}
console.log(`\ntotal ${((Date.now() - t0) / 1000).toFixed(1)} s, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')} on ${cpus().length} cores`);
process.exit(0);
