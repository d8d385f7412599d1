/**
 * Engine start-up time with a journal of 1,000,000 events: replaying it all,
 * versus starting from a snapshot (taken by a clean stop) with nothing or
 * 100,000 events after it.
 * Run: npm run bench:startup   (BENCH_EVENTS to change the journal size, BENCH_TEAMS the accounts)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { decode, encode } from '../proto/codec.js';
import { JOURNAL_SUBJECT } from '../proto/subjects.js';
import { SNAPSHOT_MANIFEST_SUBJECT, SNAPSHOT_STREAM, type SnapshotManifest } from '../proto/streams.js';
import { JOURNAL_VERSION, type JournalEvent } from '../proto/journal.js';
import { benchConfig, benchRoster } from './system.js';
import { loadBaskets } from '../src/config/baskets.js';
import { conversionDeltas } from '../src/engine/core.js';
import { startEngine } from '../src/engine/service.js';
import { SnapshotCapture } from '../src/engine/snapshot.js';
import { ensureJournalStream } from '../src/shared/streams.js';
import { createLogger } from '../src/shared/log.js';
import { freePort, startNatsServer } from '../src/launcher/nats-server.js';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 1_000_000);
/** BENCH_TEAMS: accounts the events are spread over (a snapshot's size follows accounts × their history, not events). */
const TEAMS = Number(process.env.BENCH_TEAMS ?? 100);
const PER_MESSAGE = 1000;

const dir = mkdtempSync(join(tmpdir(), 'etf-bench-startup-'));
const nats = await startNatsServer({ port: await freePort(), storeDir: join(dir, 'nats') });
const log = createLogger('bench', process.env.BENCH_LOG ?? 'warn');
const cfg = benchConfig(dir, nats, benchRoster(TEAMS), { bcryptRounds: 4, snapshotEvery: 0, logLevel: 'warn' });
const undy = loadBaskets(undefined).baskets.get('UNDY')!;
const nc = await connect({ servers: nats.url, noAsyncTraces: true });
await ensureJournalStream(nc);
const js = jetstream(nc);

/** Writes `n` conversion events as the engine would journal them (creates and redeems alternating per team). */
let requestId = 0;
async function writeJournal(n: number): Promise<void> {
  const held = new Map<number, number>();
  for (let written = 0; written < n; ) {
    const events: JournalEvent[] = [];
    for (let i = 0; i < PER_MESSAGE && written < n; i++, written++) {
      const clientId = (written % TEAMS) + 1;
      const units = held.get(clientId) ?? 0;
      const op = units > 0 && written % 3 === 2 ? 'redeem' : 'create';
      held.set(clientId, units + (op === 'create' ? 1 : -1));
      // Compact records (journal v2): the deltas follow from the basket; `held` stands in for the positions after.
      const after = conversionDeltas(undy, op, 1).flat();
      events.push({ t: 'conversion', requestId: ++requestId, key: `k${requestId}`, op, clientId, etf: 'UNDY', amount: 1, held: after, ts: Date.now() });
    }
    await js.publish(JOURNAL_SUBJECT, encode({ v: JOURNAL_VERSION, events }));
  }
}

/** Taking a snapshot of the fully replayed state (every history live, none still an image): imaging its accounts, then packing it. */
let snapshotImageMs = 0;
let snapshotPackMs = 0;
/** The longest slice of packing (the actor packs one slice per turn). */
let snapshotSliceMs = 0;
let snapshotSlices = 0;
let snapshotAgainMs = 0;

async function timeStart(label: string, timeSnapshot = false): Promise<{ label: string; ms: number; heapMb: number }> {
  global.gc?.();
  const t0 = performance.now();
  const engine = await startEngine(cfg, nats.url, log, (err) => {
    throw err;
  });
  const ms = performance.now() - t0;
  const heapMb = process.memoryUsage().heapUsed / 2 ** 20;
  if (timeSnapshot) {
    const ts = performance.now();
    const capture = new SnapshotCapture(engine.state, engine.state.journalSeq, Date.now());
    capture.step(Infinity);
    const tp = performance.now();
    let slices = 0;
    for (let done = false; !done; slices++) {
      const t = performance.now();
      done = capture.pack(1);
      snapshotSliceMs = Math.max(snapshotSliceMs, performance.now() - t);
    }
    snapshotImageMs = tp - ts;
    snapshotPackMs = performance.now() - tp;
    snapshotSlices = slices;
    // The next snapshot, with nothing recorded since: every history's image is taken again as it is.
    const ta = performance.now();
    const again = new SnapshotCapture(engine.state, engine.state.journalSeq, Date.now());
    again.step(Infinity);
    snapshotAgainMs = performance.now() - ta;
  }
  await engine.close(); // a clean stop: saves a snapshot
  return { label, ms, heapMb };
}

try {
  // The first start journals the roster; then the bulk history.
  const first = await startEngine(cfg, nats.url, log, (e) => {
    throw e;
  });
  await first.close();
  const tw = performance.now();
  await writeJournal(EVENTS);
  console.log(`wrote ${EVENTS} journal events in ${((performance.now() - tw) / 1000).toFixed(1)} s`);
  // Drop the clean-stop snapshot of the first start, so this start replays the whole journal.
  const { jetstreamManager } = await import('@nats-io/jetstream');
  await (await jetstreamManager(nc)).streams.purge(SNAPSHOT_STREAM);

  const rows = [];
  rows.push(await timeStart(`full replay of ${EVENTS} events`, true));
  rows.push(await timeStart('snapshot, no journal after it'));
  await writeJournal(Math.round(EVENTS / 10));
  rows.push(await timeStart(`snapshot + ${Math.round(EVENTS / 10)} events after it`));
  const base = rows[0]!.ms;
  const manifest = await (await jetstreamManager(nc)).streams.getMessage(SNAPSHOT_STREAM, { last_by_subj: SNAPSHOT_MANIFEST_SUBJECT });
  const snapshotMb = manifest ? decode<SnapshotManifest>(manifest.data).bytes / 1e6 : 0;
  console.log(`\nengine start-up (journal replay → ready), ${TEAMS} accounts, the last snapshot ${snapshotMb.toFixed(1)} MB\n`);
  console.log('case                                     ms   vs full replay   heap MB');
  for (const r of rows) console.log(`${r.label.padEnd(38)} ${String(Math.round(r.ms)).padStart(6)}   ${(r.ms / base).toFixed(3).padStart(12)}   ${r.heapMb.toFixed(0).padStart(7)}`);
  console.log(
    `\ntaking a snapshot of the replayed state (every history live), every SNAPSHOT_EVERY events: imaging the accounts ${Math.round(snapshotImageMs)} ms, packing them ${Math.round(snapshotPackMs)} ms in ${snapshotSlices} slices (the longest ${snapshotSliceMs.toFixed(1)} ms); the engine goes on between slices. Imaging them again with nothing recorded since: ${snapshotAgainMs.toFixed(1)} ms`,
  );
} finally {
  await nc.close();
  await nats.stop();
  rmSync(dir, { recursive: true, force: true });
}
