/**
 * The throughput cost of durability: the same create/redeem commands through
 *   core        the pure core alone (decide + apply, no I/O)
 *   memory      the engine actor over NATS, journal writes answered at once (nothing durable)
 *   jetstream   the engine actor over NATS, each group commit a JetStream file-store write
 *   cluster R3  this tree's actor on a local three-node cluster (NATS_CLUSTER=3's set-up), the journal in 3 replicas:
 *               each group commit waits for two nodes' file stores
 * The journal lines differ only in the journal, so their ratios are what durability and replication cost.
 * With BENCH_BASELINE_REF=<git ref>, the same three through that ref's engine
 * (built by bench/baseline.ts), interleaved with this tree's on the same
 * nats-server, and each line's ratio to the baseline's.
 * Every measurement runs in a process of its own (this script, BENCH_DURABILITY_CHILD):
 * two builds in one process share their libraries' code (msgpackr, nats.js), and
 * each slows the other down, so neither would be measured as it runs.
 * Run: npm run bench:durability   (BENCH_SECONDS, BENCH_INFLIGHT, BENCH_BASELINE_REF)
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PROJECT_ROOT } from '../src/config/config.js';
import { startService } from '../src/shared/service-process.js';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { JOURNAL_STREAM } from '../proto/subjects.js';
import type { EngineCommand } from '../proto/engine.js';
import type { JournalEvent } from '../proto/journal.js';
import { loadBaskets, type Instruments } from '../src/config/baskets.js';
import { ensureJournalStream } from '../src/shared/streams.js';
import { createLogger, type Logger } from '../src/shared/log.js';
import { freePort, startNatsServer } from '../src/launcher/nats-server.js';
import { buildBaseline } from './baseline.js';
import { planCluster, startClusterNode, whenJetStreamReady } from '../src/launcher/nats-cluster.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const INFLIGHT = Number(process.env.BENCH_INFLIGHT ?? 512);
const TEAMS = 16;
const instruments = loadBaskets(undefined);
const cfg = { instruments, maxAmount: 1_000_000 };
const log = createLogger('bench', 'warn');

/** The parts of an engine build the bench drives; this tree's and a baseline's differ in types, not in these calls. */
interface Engine {
  emptyState(instruments?: Instruments): unknown;
  applyEvent(state: never, ev: JournalEvent): void;
  decide(state: never, cfg: never, cmd: EngineCommand, now: number): { events: JournalEvent[]; result?: unknown };
  Actor: new (nc: NatsConnection, state: never, cfg: never, journal: never, log: Logger, onFatal: (err: unknown) => void) => { start(): Promise<void>; drain(): Promise<void> };
  Journal: new (nc: NatsConnection, lastSeq: number) => unknown;
  Client: new (nc: NatsConnection, timeoutMs: number) => { call(cmd: EngineCommand): Promise<{ ok: boolean; error?: unknown }>; close(): void };
}

/** An engine build's modules, from its dist directory (this tree's, or a baseline's). */
async function loadEngine(distDir: string): Promise<Engine> {
  const load = (f: string) => import(pathToFileURL(join(distDir, f)).href) as Promise<Record<string, any>>;
  // The engine client moved from src/gateway to src/shared: a baseline from before has it at the old place.
  const client = existsSync(join(distDir, 'src/shared/engine-client.js')) ? 'src/shared/engine-client.js' : 'src/gateway/engine-client.js';
  const [c, s, a, j, e] = await Promise.all(['src/engine/core.js', 'src/engine/state.js', 'src/engine/actor.js', 'src/engine/journal.js', client].map(load));
  return { emptyState: s!.emptyState, applyEvent: s!.applyEvent, decide: c!.decide, Actor: a!.EngineActor, Journal: j!.JournalWriter, Client: e!.EngineClient };
}

function seededState(engine: Engine): unknown {
  const s = engine.emptyState(instruments);
  for (let id = 1; id <= TEAMS; id++) {
    engine.applyEvent(s as never, { t: 'account', clientId: id, username: `team${id}`, source: 'roster', opening: [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13].map((sym) => [sym, 1e9]), ts: 0 });
  }
  return s;
}
const command = (i: number): EngineCommand => ({ op: i % 2 === 0 ? 'create' : 'redeem', clientId: (i % TEAMS) + 1, etf: 'UNDY', amount: 1 });

function coreOnly(engine: Engine): number {
  const s = seededState(engine) as never;
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < SECONDS * 1000) {
    for (let k = 0; k < 1000; k++, n++) for (const ev of engine.decide(s, cfg as never, command(n), 0).events) engine.applyEvent(s, ev);
  }
  return n / ((performance.now() - t0) / 1000);
}

async function throughActor(engine: Engine, servers: string[], journalWriter: (nc: NatsConnection) => unknown): Promise<number> {
  const nc = await connect({ servers, noAsyncTraces: true });
  const a = new engine.Actor(nc, seededState(engine) as never, cfg as never, journalWriter(nc) as never, log, (err) => {
    throw err;
  });
  await a.start();
  const clientConn = await connect({ servers, noAsyncTraces: true });
  const client = new engine.Client(clientConn, 30_000);
  let n = 0;
  let done = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: INFLIGHT }, async () => {
      while (performance.now() < deadline) {
        const r = await client.call(command(n++));
        if (!r.ok) throw new Error(JSON.stringify(r.error)); // in codes, or in words from an older build
        done++;
      }
    }),
  );
  const rate = done / ((performance.now() - t0) / 1000);
  client.close();
  await a.drain();
  await clientConn.close();
  await nc.close();
  return rate;
}

/** A journal that answers at once: what the actor costs without durability. */
const memoryJournal = () => {
  let seq = 0;
  return {
    get sequence() {
      return seq;
    },
    get queued() {
      return seq;
    },
    append: async () => ++seq,
  };
};

type Path = 'core' | 'memory' | 'jetstream';
interface ChildTask {
  dist: string;
  path: Path;
  servers: string[];
  /** Where the journal stands: each JetStream run continues it (the writer names the sequence it follows). */
  journalSeq: number;
}
const CHILD_ENV = 'BENCH_DURABILITY_CHILD';
const RESULT = 'durability-result';

/** One measurement, in a process of its own. */
async function runChild(task: ChildTask): Promise<void> {
  const engine = await loadEngine(task.dist);
  const rate =
    task.path === 'core'
      ? coreOnly(engine)
      : await throughActor(engine, task.servers, (nc) => (task.path === 'memory' ? memoryJournal() : new engine.Journal(nc, task.journalSeq)));
  console.log(`${RESULT} ${rate}`);
}

async function measure(task: ChildTask): Promise<number> {
  const child = await startService({
    name: `durability ${task.path}`,
    args: [fileURLToPath(import.meta.url)],
    env: { ...process.env, [CHILD_ENV]: JSON.stringify(task) },
    ready: (line) => line.startsWith(RESULT),
  });
  await child.exited;
  return Number(child.ready.split(' ')[1]);
}

/** The journal's last sequence on `servers`. */
async function journalEnd(servers: string[]): Promise<number> {
  const nc = await connect({ servers, noAsyncTraces: true });
  const seq = (await (await jetstreamManager(nc)).streams.info(JOURNAL_STREAM)).state.last_seq;
  await nc.close();
  return seq;
}

/** This tree's actor with its journal in 3 replicas on a local three-node cluster. */
async function onCluster(dir: string): Promise<number> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const clusterPorts = [await freePort(), await freePort(), await freePort()];
  const plan = planCluster({ ports, clusterPorts, storeRoot: join(dir, 'cluster'), configDir: join(dir, 'cluster-conf') });
  const nodes = await Promise.all(plan.nodes.map((n) => startClusterNode(n)));
  try {
    const servers = plan.nodes.map((n) => n.url);
    const nc = await connect({ servers, noAsyncTraces: true });
    await whenJetStreamReady(nc, () => ensureJournalStream(nc, undefined, 3));
    await nc.close();
    return await measure({ dist: THIS_DIST, path: 'jetstream', servers, journalSeq: 0 });
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
  }
}

const THIS_DIST = join(PROJECT_ROOT, 'dist');

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'etf-bench-dur-'));
  const nats = await startNatsServer({ port: await freePort(), storeDir: join(dir, 'nats') });
  const ref = process.env.BENCH_BASELINE_REF;
  // The baseline's whole tree is built: its engine modules import what they need at their own commit.
  const clientAt = (r: string) => (spawnSync('git', ['cat-file', '-e', `${r}:src/shared/engine-client.ts`], { cwd: PROJECT_ROOT }).status === 0 ? 'src/shared/engine-client.ts' : 'src/gateway/engine-client.ts');
  const baseline = ref ? await buildBaseline(['src/engine/core.ts', 'src/engine/state.ts', 'src/engine/actor.ts', 'src/engine/journal.ts', clientAt(ref)], ref) : null;
  try {
    const nc = await connect({ servers: nats.url, noAsyncTraces: true });
    await ensureJournalStream(nc);
    await nc.close();
    const engines = [{ label: 'this tree', dist: THIS_DIST }, ...(baseline ? [{ label: `${ref} (${baseline.commit.slice(0, 7)})`, dist: join(baseline.dir, 'dist') }] : [])];
    const rows = new Map<string, Map<Path, number>>(engines.map((e) => [e.label, new Map()]));
    // Interleaved per path, so both builds see the same machine at about the same time.
    for (const path of ['core', 'memory', 'jetstream'] as const) {
      for (const e of engines) {
        const journalSeq = path === 'jetstream' ? await journalEnd([nats.url]) : 0;
        rows.get(e.label)!.set(path, await measure({ dist: e.dist, path, servers: [nats.url], journalSeq }));
      }
    }
    const clusterRate = await onCluster(dir);
    console.log(`\ncreate/redeem commands per second, ${INFLIGHT} in flight, ${SECONDS} s each, each in a process of its own\n`);
    console.log(`path         ${engines.map((e) => e.label.padStart(22)).join('')}${baseline ? '   vs baseline' : ''}`);
    for (const path of ['core', 'memory', 'jetstream'] as const) {
      const values = engines.map((e) => rows.get(e.label)!.get(path)!);
      const ratio = baseline ? `   ${(values[0]! / values[1]!).toFixed(2)}×` : '';
      console.log(`${path.padEnd(10)} ${values.map((v) => String(Math.round(v)).padStart(22)).join('')}${ratio}`);
    }
    console.log(`${'cluster R3'.padEnd(10)} ${String(Math.round(clusterRate)).padStart(22)}`);
    const mine = rows.get('this tree')!;
    console.log(`\nthis tree: jetstream / memory journal = ${(mine.get('jetstream')! / mine.get('memory')!).toFixed(2)} (what durability costs), cluster R3 / jetstream = ${(clusterRate / mine.get('jetstream')!).toFixed(2)} (what replication costs)`);
  } finally {
    baseline?.remove();
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const childTask = process.env[CHILD_ENV];
if (childTask) await runChild(JSON.parse(childTask) as ChildTask);
else await main();
