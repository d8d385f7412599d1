/**
 * The throughput cost of durability: the same create/redeem commands through
 *   core        the pure core alone (decide + apply, no I/O)
 *   memory      the engine actor over NATS, journal writes answered at once (nothing durable)
 *   jetstream   the engine actor over NATS, each group commit a JetStream file-store write
 * The last two differ only in the journal, so their ratio is what durability costs.
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
  console.log(`\ncreate/redeem commands per second, ${INFLIGHT} in flight, ${SECONDS} s each\n`);
  console.log('path         cmds/s      vs memory journal');
  for (const [name, v] of [['core', core], ['memory', memory], ['jetstream', jetstreamRate]] as const) {
    console.log(`${name.padEnd(10)} ${String(Math.round(v)).padStart(9)}   ${(v / memory).toFixed(2)}`);
  }
} finally {
  await nats.stop();
  rmSync(dir, { recursive: true, force: true });
}
