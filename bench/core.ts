/**
 * The pure engine core (decide + apply, no I/O): create/redeem commands per
 * second and the share of wall time spent in garbage collection, for this
 * tree's core and for the core of a baseline git ref, in the same run,
 * interleaved. The workload is bench/durability.ts's core line: 16 teams,
 * creates and redeems of 1 unit alternating.
 *
 *   new          decide + applyEvent
 *   new+answer   the same, and the reply read from the decision (what the actor does;
 *                the new core builds it only then, the baseline inside decide)
 *   baseline     the baseline ref's decide + applyEvent (it always builds the reply)
 *
 * Run: npm run bench:core   (BENCH_SECONDS per case and round, BENCH_ROUNDS, BENCH_BASELINE_REF)
 */
import { PerformanceObserver } from 'node:perf_hooks';
import type { EngineCommand } from '../proto/engine.js';
import type { JournalEvent } from '../proto/journal.js';
import { loadBaskets, type Instruments } from '../src/config/baskets.js';
import * as newCore from '../src/engine/core.js';
import * as newState from '../src/engine/state.js';
import { buildBaseline } from './baseline.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const TEAMS = 16;
const SLICE = 20_000;

/** What the bench needs of a core, old or new (their state types differ). */
interface Core {
  emptyState(instruments?: Instruments): unknown;
  applyEvent(state: never, ev: JournalEvent): void;
  decide(state: never, cfg: { instruments: Instruments; maxAmount: number }, cmd: EngineCommand, now: number): { events: JournalEvent[]; result?: unknown; error?: unknown };
}

const instruments = loadBaskets(undefined);
const cfg = { instruments, maxAmount: 1_000_000 };
const command = (i: number): EngineCommand => ({ op: i % 2 === 0 ? 'create' : 'redeem', clientId: (i % TEAMS) + 1, etf: 'UNDY', amount: 1 });

function seeded(core: Core): unknown {
  const s = core.emptyState(instruments);
  for (let id = 1; id <= TEAMS; id++) {
    core.applyEvent(s as never, { t: 'account', clientId: id, username: `team${id}`, source: 'roster', opening: [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13].map((sym) => [sym, 1e9]), ts: 0 });
  }
  return s;
}

const gcs: { start: number; end: number }[] = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcs.push({ start: e.startTime, end: e.startTime + e.duration });
}).observe({ entryTypes: ['gc'] });

const turn = () => new Promise((r) => setImmediate(r));

interface Totals {
  cmds: number;
  ms: number;
  gcMs: number;
}

/** Runs the workload for SECONDS in slices (gc entries are delivered between them); adds to `t`. */
async function measure(core: Core, readAnswer: boolean, t: Totals): Promise<void> {
  (globalThis as { gc?: () => void }).gc?.();
  await turn();
  const s = seeded(core) as never;
  let n = 0;
  const t0 = performance.now();
  const until = t0 + SECONDS * 1000;
  while (performance.now() < until) {
    for (let k = 0; k < SLICE; k++, n++) {
      const d = core.decide(s, cfg, command(n), 0);
      for (const ev of d.events) core.applyEvent(s, ev);
      if (readAnswer && d.result === undefined) throw new Error('no answer');
      if (d.error) throw new Error(`refused: ${JSON.stringify(d.error)}`);
    }
    await turn();
  }
  const t1 = performance.now();
  await new Promise((r) => setTimeout(r, 20));
  let gcMs = 0;
  for (const g of gcs) gcMs += Math.max(0, Math.min(g.end, t1) - Math.max(g.start, t0));
  gcs.length = 0;
  t.cmds += n;
  t.ms += t1 - t0;
  t.gcMs += gcMs;
}

const base = await buildBaseline(['src/engine/core.ts', 'src/engine/state.ts']);
try {
  const oldCore = await base.load<Record<string, unknown>>('src/engine/core.ts');
  const oldState = await base.load<Record<string, unknown>>('src/engine/state.ts');
  const baseline = { ...oldState, ...oldCore } as unknown as Core;
  const current = { ...newState, ...newCore } as unknown as Core;
  const cases: [string, Core, boolean][] = [
    ['new', current, false],
    ['new+answer', current, true],
    ['baseline', baseline, false],
  ];
  const totals = new Map(cases.map(([name]) => [name, { cmds: 0, ms: 0, gcMs: 0 }]));
  // A warm-up round (not counted) so neither side is measured while the JIT is still compiling it.
  const warm = { cmds: 0, ms: 0, gcMs: 0 };
  for (const [, core, answer] of cases) await measure(core, answer, warm);
  for (let r = 0; r < ROUNDS; r++) for (const [name, core, answer] of cases) await measure(core, answer, totals.get(name)!);

  const rate = (t: Totals) => t.cmds / (t.ms / 1000);
  const b = rate(totals.get('baseline')!);
  console.log(`\nengine core, create/redeem of 1 unit, ${TEAMS} teams, ${ROUNDS} rounds × ${SECONDS} s per case, interleaved`);
  console.log(`baseline: ${base.ref === base.commit ? '' : `${base.ref} = `}${base.commit.slice(0, 12)}\n`);
  console.log('case          cmds/s     GC share   vs baseline');
  for (const [name] of cases) {
    const t = totals.get(name)!;
    console.log(`${name.padEnd(11)} ${String(Math.round(rate(t))).padStart(9)}   ${((100 * t.gcMs) / t.ms).toFixed(1).padStart(6)} %   ${(rate(t) / b).toFixed(2).padStart(8)}`);
  }
} finally {
  base.remove();
}
