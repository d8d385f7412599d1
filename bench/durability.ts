/**
 * The throughput cost of durability: the same create/redeem commands through
 *   core        the pure core alone (decide + apply, no I/O)
 *   memory      the engine actor over NATS, journal writes answered at once (nothing durable)
 *   jetstream   the engine actor over NATS, each group commit a JetStream file-store write
 *   cluster R3  the same on a local three-node cluster (NATS_CLUSTER=3's set-up), the journal in 3 replicas:
 *               each group commit waits for two nodes' file stores
 * The last three differ only in the journal, so their ratios are what durability and replication cost.
 * Run: npm run bench:durability   (BENCH_SECONDS, BENCH_INFLIGHT)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { EngineCommand } from '../proto/engine.js';
import { loadBaskets } from '../src/config/baskets.js';
import { applyEvent, decide, type CoreConfig } from '../src/engine/core.js';
import { emptyState, type EngineState } from '../src/engine/state.js';
import { EngineActor } from '../src/engine/actor.js';
import { JournalWriter } from '../src/engine/journal.js';
import { EngineClient } from '../src/gateway/engine-client.js';
import { ensureJournalStream } from '../src/shared/streams.js';
import { createLogger } from '../src/shared/log.js';
import { freePort, startNatsServer } from '../src/launcher/nats-server.js';
import { planCluster, startClusterNode, whenJetStreamReady } from '../src/launcher/nats-cluster.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const INFLIGHT = Number(process.env.BENCH_INFLIGHT ?? 512);
const TEAMS = 16;
const cfg: CoreConfig = { instruments: loadBaskets(undefined), maxAmount: 1_000_000 };
const log = createLogger('bench', 'warn');

function seededState(): EngineState {
  const s = emptyState();
  for (let id = 1; id <= TEAMS; id++) {
    applyEvent(s, { t: 'account', clientId: id, username: `team${id}`, source: 'roster', opening: [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13].map((sym) => [sym, 1e9]), ts: 0 });
  }
  return s;
}
const command = (i: number): EngineCommand => ({ op: i % 2 === 0 ? 'create' : 'redeem', clientId: (i % TEAMS) + 1, etf: 'UNDY', amount: 1 });

function coreOnly(): number {
  const s = seededState();
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < SECONDS * 1000) {
    for (let k = 0; k < 1000; k++, n++) for (const ev of decide(s, cfg, command(n), 0).events) applyEvent(s, ev);
  }
  return n / ((performance.now() - t0) / 1000);
}

async function throughActor(nc: NatsConnection, journal: JournalWriter): Promise<number> {
  const actor = new EngineActor(nc, seededState(), cfg, journal, log, (err) => {
    throw err;
  });
  await actor.start();
  const client = new EngineClient(await connect({ servers: nc.getServer(), noAsyncTraces: true }), 30_000);
  let n = 0;
  let done = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: INFLIGHT }, async () => {
      while (performance.now() < deadline) {
        const r = await client.call(command(n++));
        if (!r.ok) throw new Error(r.error.message);
        done++;
      }
    }),
  );
  const rate = done / ((performance.now() - t0) / 1000);
  client.close();
  await actor.drain();
  return rate;
}

/** The actor with its journal in 3 replicas on a local three-node cluster. */
async function onCluster(): Promise<number> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const clusterPorts = [await freePort(), await freePort(), await freePort()];
  const plan = planCluster({ ports, clusterPorts, storeRoot: join(dir, 'cluster'), configDir: join(dir, 'cluster-conf') });
  const nodes = await Promise.all(plan.nodes.map((n) => startClusterNode(n)));
  try {
    const nc = await connect({ servers: plan.nodes.map((n) => n.url), noAsyncTraces: true });
    await whenJetStreamReady(nc, () => ensureJournalStream(nc, 3));
    const rate = await throughActor(nc, new JournalWriter(nc, 0));
    await nc.close();
    return rate;
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
  }
}

const dir = mkdtempSync(join(tmpdir(), 'etf-bench-dur-'));
const nats = await startNatsServer({ port: await freePort(), storeDir: join(dir, 'nats') });
try {
  const nc = await connect({ servers: nats.url, noAsyncTraces: true });
  await ensureJournalStream(nc);
  const core = coreOnly();
  let seq = 0;
  const memoryJournal = { sequence: 0, append: async () => ++seq } as unknown as JournalWriter;
  const memory = await throughActor(nc, memoryJournal);
  const jetstreamRate = await throughActor(nc, new JournalWriter(nc, 0));
  await nc.close();
  const clusterRate = await onCluster();
  console.log(`\ncreate/redeem commands per second, ${INFLIGHT} in flight, ${SECONDS} s each\n`);
  console.log('path         cmds/s      vs memory journal');
  for (const [name, v] of [['core', core], ['memory', memory], ['jetstream', jetstreamRate], ['cluster R3', clusterRate]] as const) {
    console.log(`${name.padEnd(10)} ${String(Math.round(v)).padStart(9)}   ${(v / memory).toFixed(2)}`);
  }
} finally {
  await nats.stop();
  rmSync(dir, { recursive: true, force: true });
}
