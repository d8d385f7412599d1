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
 * Run: npm run bench:durability   (BENCH_SECONDS, BENCH_INFLIGHT, BENCH_BASELINE_REF)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { JOURNAL_STREAM } from '../proto/subjects.js';
import type { EngineCommand } from '../proto/engine.js';
import type { JournalEvent } from '../proto/journal.js';
import { loadBaskets, type Instruments } from '../src/config/baskets.js';
import * as core from '../src/engine/core.js';
import * as state from '../src/engine/state.js';
import * as actor from '../src/engine/actor.js';
import * as journal from '../src/engine/journal.js';
import * as engineClient from '../src/gateway/engine-client.js';
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
  label: string;
  emptyState(instruments?: Instruments): unknown;
  applyEvent(state: never, ev: JournalEvent): void;
  decide(state: never, cfg: never, cmd: EngineCommand, now: number): { events: JournalEvent[]; result?: unknown };
  Actor: new (nc: NatsConnection, state: never, cfg: never, journal: never, log: Logger, onFatal: (err: unknown) => void) => { start(): Promise<void>; drain(): Promise<void> };
  Journal: new (nc: NatsConnection, lastSeq: number) => unknown;
  Client: new (nc: NatsConnection, timeoutMs: number) => { call(cmd: EngineCommand): Promise<{ ok: boolean; error?: { message: string } }>; close(): void };
}

const thisTree: Engine = {
  label: 'this tree',
  emptyState: state.emptyState,
  applyEvent: state.applyEvent as Engine['applyEvent'],
  decide: core.decide as unknown as Engine['decide'],
  Actor: actor.EngineActor as unknown as Engine['Actor'],
  Journal: journal.JournalWriter as unknown as Engine['Journal'],
  Client: engineClient.EngineClient as unknown as Engine['Client'],
};

async function baselineEngine(ref: string): Promise<{ engine: Engine; remove(): void }> {
  const files = ['src/engine/core.ts', 'src/engine/state.ts', 'src/engine/actor.ts', 'src/engine/journal.ts', 'src/gateway/engine-client.ts'];
  const base = await buildBaseline(files, ref);
  const [c, s, a, j, e] = await Promise.all(files.map((f) => base.load<Record<string, any>>(f)));
  return {
    engine: { label: `${ref} (${base.commit.slice(0, 7)})`, emptyState: s!.emptyState, applyEvent: s!.applyEvent, decide: c!.decide, Actor: a!.EngineActor, Journal: j!.JournalWriter, Client: e!.EngineClient },
    remove: base.remove,
  };
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

async function throughActor(engine: Engine, nc: NatsConnection, journalWriter: unknown): Promise<number> {
  const a = new engine.Actor(nc, seededState(engine) as never, cfg as never, journalWriter as never, log, (err) => {
    throw err;
  });
  await a.start();
  const clientConn = await connect({ servers: nc.getServer(), noAsyncTraces: true });
  const client = new engine.Client(clientConn, 30_000);
  let n = 0;
  let done = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: INFLIGHT }, async () => {
      while (performance.now() < deadline) {
        const r = await client.call(command(n++));
        if (!r.ok) throw new Error(r.error?.message);
        done++;
      }
    }),
  );
  const rate = done / ((performance.now() - t0) / 1000);
  client.close();
  await a.drain();
  await clientConn.close();
  return rate;
}

/** A journal that answers at once: what the actor costs without durability. */
const memoryJournal = () => {
  let seq = 0;
  return { get sequence() {
    return seq;
  }, append: async () => ++seq };
};

/** This tree's actor with its journal in 3 replicas on a local three-node cluster. */
async function onCluster(): Promise<number> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const clusterPorts = [await freePort(), await freePort(), await freePort()];
  const plan = planCluster({ ports, clusterPorts, storeRoot: join(dir, 'cluster'), configDir: join(dir, 'cluster-conf') });
  const nodes = await Promise.all(plan.nodes.map((n) => startClusterNode(n)));
  try {
    const nc = await connect({ servers: plan.nodes.map((n) => n.url), noAsyncTraces: true });
    await whenJetStreamReady(nc, () => ensureJournalStream(nc, undefined, 3));
    const rate = await throughActor(thisTree, nc, new thisTree.Journal(nc, 0));
    await nc.close();
    return rate;
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
  }
}

const dir = mkdtempSync(join(tmpdir(), 'etf-bench-dur-'));
const nats = await startNatsServer({ port: await freePort(), storeDir: join(dir, 'nats') });
const ref = process.env.BENCH_BASELINE_REF;
const baseline = ref ? await baselineEngine(ref) : null;
try {
  const nc = await connect({ servers: nats.url, noAsyncTraces: true });
  await ensureJournalStream(nc);
  const engines = [thisTree, ...(baseline ? [baseline.engine] : [])];
  const rows = new Map<string, Map<string, number>>(engines.map((e) => [e.label, new Map()]));
  // Interleaved per path, so both builds see the same machine at about the same time.
  for (const e of engines) rows.get(e.label)!.set('core', coreOnly(e));
  for (const e of engines) rows.get(e.label)!.set('memory', await throughActor(e, nc, memoryJournal()));
  // Each JetStream run continues the journal where the last one left it (the writer names the sequence it follows).
  let journalSeq = 0;
  for (const e of engines) {
    rows.get(e.label)!.set('jetstream', await throughActor(e, nc, new e.Journal(nc, journalSeq)));
    journalSeq = (await (await jetstreamManager(nc)).streams.info(JOURNAL_STREAM)).state.last_seq;
  }
  await nc.close();
  const clusterRate = await onCluster();
  console.log(`\ncreate/redeem commands per second, ${INFLIGHT} in flight, ${SECONDS} s each\n`);
  console.log(`path         ${engines.map((e) => e.label.padStart(22)).join('')}${baseline ? '   vs baseline' : ''}`);
  for (const path of ['core', 'memory', 'jetstream']) {
    const values = engines.map((e) => rows.get(e.label)!.get(path)!);
    const ratio = baseline ? `   ${(values[0]! / values[1]!).toFixed(2)}×` : '';
    console.log(`${path.padEnd(10)} ${values.map((v) => String(Math.round(v)).padStart(22)).join('')}${ratio}`);
  }
  console.log(`${'cluster R3'.padEnd(10)} ${String(Math.round(clusterRate)).padStart(22)}`);
  const mine = rows.get(thisTree.label)!;
  console.log(`\nthis tree: jetstream / memory journal = ${(mine.get('jetstream')! / mine.get('memory')!).toFixed(2)} (what durability costs), cluster R3 / jetstream = ${(clusterRate / mine.get('jetstream')!).toFixed(2)} (what replication costs)`);
} finally {
  baseline?.remove();
  await nats.stop();
  rmSync(dir, { recursive: true, force: true });
}
