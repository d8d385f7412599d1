/**
 * Requests per second of authenticated /create over HTTP, against baselines
 * measured in the same run on the same system:
 *   health   HTTP → NATS → engine → reply (no auth, no journal write)
 *   holdings + authentication (cached keyed proof) + a read of engine state
 *   create   + a durable journal write (group commit) before the 200
 *   create@R the same offered at R req/s in all (BENCH_RATE, default 4000; 0 skips it): latency below saturation
 * each on every HTTP server the gateway has (uws where uWebSockets.js loads, node), with
 * throttling on as shipped (limits out of this load's reach, so checked but never refusing), and
 * against the HTTP ceiling: bare uWS answering the same POST (bench/ceiling.ts), and
 * the naive chain (bench/chain.ts: uWS → JSON.parse → one nc.request per request → an
 * echo responder), which does no work at all: /create should cost far less server CPU.
 * Server CPU per request is every server process's user + system time over the
 * measured seconds (/proc), divided by the requests answered; the load generator
 * (this process) is not counted.
 * Run: npm run bench:create   (BENCH_SECONDS, BENCH_CONNECTIONS to change the load,
 *      BENCH_SCENARIOS=create to run a subset, BENCH_SERVERS=uws to skip node,
 *      BENCH_BASELINE_REF=<git ref> to run the same against that ref's engine and gateway (with HTTP_FRONT=direct, for refs that had the front),
 *      BENCH_PROFILE=engine|gateway for a CPU profile in .bench/, BENCH_ROUNDS=n to run every system n times in turn and print medians)
 */
import autocannon, { type Request } from 'autocannon';
import { connect } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { encode } from '../proto/codec.js';
import { fillSubject } from '../proto/subjects.js';
import { startBenchSystem, spawnService } from './system.js';
import { buildBaseline } from './baseline.js';
import { natsFloor, spawnEcho, type Floor } from './nats-floor.js';
import { cpuMeter } from './cpu.js';
import { startNatsServer, freePort, natsServerEnv } from '../src/launcher/nats-server.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadUws, type HttpServerKind } from '../src/gateway/transport/index.js';
import { THROTTLE_DEFAULTS, type Config } from '../src/config/config.js';

const seconds = Number(process.env.BENCH_SECONDS ?? 8);
// The first seconds at full load run slower (JIT tiers, heaps growing to their working size): measured apart, not in the figure.
const warmup = Number(process.env.BENCH_WARMUP ?? 3);
// Latency at a load both this tree and the baseline carry (0: not measured): what a class sees below saturation.
const offered = Number(process.env.BENCH_RATE ?? 4000);
// This machine's speed drifts by a quarter from minute to minute: BENCH_ROUNDS > 1 runs every system once per round, in turn, and reports medians.
const rounds = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 1));
let round = 0;
const connections = Number(process.env.BENCH_CONNECTIONS ?? 64);
const TEAMS = 8;

const roster = Array.from({ length: TEAMS }, (_, i) => `${i + 1} team${i + 1} team${i + 1}pass`).join('\n');
const OPERATOR = { username: 'bench-operator', password: 'bench-operator-pass' };
/**
 * Throttling on, as config/default.json ships it, with request limits this
 * load never reaches (one host sends it all): what checking them costs, not
 * refusals. The login-failure limits are the shipped ones (no login fails here).
 */
const unreached = { burst: 1e9, perMinute: 1e12 };
const THROTTLE: Config['throttle'] = { ...THROTTLE_DEFAULTS, enabled: true, address: unreached, team: unreached, conversions: unreached };
const uwsLoads = (await loadUws()).ok;
const fronts = (process.env.BENCH_SERVERS?.split(',') ?? (uwsLoads ? ['uws', 'node'] : ['node'])) as HttpServerKind[];
const only = process.env.BENCH_SCENARIOS?.split(',');

interface Row {
  round: number;
  scenario: string;
  front: string;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  non2xx: number;
  errors: number;
  /** Server CPU per answered request, µs, and each process's share. */
  cpuUs: number;
  cpuBy: Record<string, number>;
}
const rows: Row[] = [];
const form = (i: number, extra: string) => `username=team${i}&password=team${i}pass${extra}`;
const formHeaders = { 'content-type': 'application/x-www-form-urlencoded' };
const teams = Array.from({ length: TEAMS }, (_, i) => i + 1);
const createRequests = teams.map((i) => ({ method: 'POST', path: '/create', headers: formHeaders, body: form(i, '&etf_name=UNDY&amount=1') }));

async function measure(url: string, scenario: string, front: string, requests: Request[], pids: Record<string, number>, overallRate?: number): Promise<void> {
  const cpu = cpuMeter(pids);
  const r = await autocannon({ url, connections, duration: seconds, requests, ...(overallRate ? { overallRate } : {}) });
  const used = cpu();
  const answered = Math.max(1, r['2xx'] + r.non2xx);
  const us = (s: number) => Math.round((s * 1e6) / answered);
  const cpuBy = Object.fromEntries(Object.entries(used).flatMap(([k, t]) => [[k, us(t.user + t.system)], [`${k} kernel`, us(t.system)]]));
  const cpuUs = Object.entries(cpuBy).reduce((a, [k, v]) => (k.endsWith(' kernel') ? a : a + v), 0);
  rows.push({ round, scenario, front, rps: Math.round(r.requests.average), p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors, cpuUs, cpuBy });
}

// The ceiling: the same POST answered by uWS alone (where it loads).
for (const front of uwsLoads ? ['uws'] : []) {
  const child = await spawnService('bench/ceiling.js', process.env, 'ceiling listening');
  try {
    const url = `http://127.0.0.1:${child.ready.split(' ').pop()}`;
    await autocannon({ url, connections, duration: warmup, requests: createRequests });
    await measure(url, 'ceiling', front, createRequests, { ceiling: child.child.pid! });
  } finally {
    await child.stop();
  }
}

// The NATS floor: a bare request/reply between two processes, closed loop at the same concurrency, then at the offered rate.
const floors: [string, Floor][] = [[`${connections} outstanding`, await natsFloor({ concurrency: connections, seconds })]];
if (offered > 0) floors.push([`${offered}/s offered`, await natsFloor({ concurrency: connections, seconds, rate: offered })]);

// BENCH_BASELINE_REF: the same scenarios through that ref's whole system (its engine and gateway, built by bench/baseline.ts), after this tree's.
const ref = process.env.BENCH_BASELINE_REF;
const baseline = ref ? await buildBaseline([], ref) : null;
const systems: { label: string; front?: HttpServerKind; root?: string }[] = [
  ...fronts.map((front) => ({ label: front, front })),
  ...(baseline ? [{ label: `base ${ref}`, root: baseline.dir }] : []),
];
// The chain takes the same request as JSON (it JSON.parse's its body).
const chainRequests = teams.map((i) => ({ method: 'POST', path: '/create', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: `team${i}`, password: `team${i}pass`, etf_name: 'UNDY', amount: 1 }) }));
const withChain = uwsLoads && (!only || only.includes('create'));

/**
 * The naive chain's three processes (nats-server, the chain, its echo responder), measured as /create is;
 * `file` bench/chain.js, or bench/batched-chain.js (the same with the gateway's batching, as `front` 'batched').
 */
async function measureChain(file: string, front: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'etf-chain-'));
  const nats = await startNatsServer({ port: await freePort(), storeDir: join(dir, 'nats') });
  const echo = await spawnEcho(nats.url);
  const chain = await spawnService(file, { ...process.env, CHAIN_NATS_URL: nats.url }, 'chain listening');
  try {
    const url = `http://127.0.0.1:${chain.ready.split(' ').pop()}`;
    await autocannon({ url, connections, duration: warmup, requests: chainRequests });
    await measure(url, 'create', front, chainRequests, { [front]: chain.child.pid!, echo: echo.child.pid!, 'nats-server': nats.proc.pid! });
  } finally {
    await chain.stop();
    await echo.stop();
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

for (round = 1; round <= rounds; round++) {
  if (withChain) {
    await measureChain('bench/chain.js', 'chain');
    await measureChain('bench/batched-chain.js', 'batched');
  }
  for (const { label: front, root, ...rest } of systems) {
    // A baseline runs as its own code reads the config: before HTTP_SERVER, `front: 'direct'` put uWS on the port (the fast path then).
    const http = { host: '127.0.0.1', port: 0, maxBodyBytes: 16384, ...(rest.front ? { server: rest.front } : { front: 'direct' }) } as Config['http'];
    const sys = await startBenchSystem(roster, { operator: OPERATOR, http, throttle: THROTTLE }, root);
    try {
      // Enough of every UNDY component that no create in the run is refused.
      const nc = await connect({ servers: sys.nats.url });
      const js = jetstream(nc);
      let seq = 1;
      for (let id = 1; id <= TEAMS; id++) {
        for (let symbol = 3; symbol <= 12; symbol++) {
          await js.publish(fillSubject(id), encode({ seq: seq++, client_id: id, symbol, side: 1, quantity: 100_000_000, price: 100 }));
        }
      }
      await nc.close();

      const scenarios = {
        health: [{ method: 'GET', path: '/health' }],
        holdings: teams.map((i) => ({ method: 'GET', path: `/holdings?${form(i, '')}` })),
        create: createRequests,
      };
      // BENCH_SCENARIOS=create (comma-separated) runs a subset, e.g. while profiling one path.
      const chosen = Object.entries(scenarios).filter(([name]) => !only || only.includes(name));
      // Warm-up at full load: pays each team's one bcrypt check and JIT-compiles the paths.
      for (const [, requests] of chosen) await autocannon({ url: sys.url, connections, duration: warmup, requests });
      for (const [scenario, requests] of chosen) await measure(sys.url, scenario, front, requests, sys.pids);
      if (offered > 0 && chosen.some(([name]) => name === 'create')) await measure(sys.url, `create@${offered}`, front, createRequests, sys.pids, offered);
      if (chosen.some(([name]) => name === 'create')) {
        // Every conversion rule on, none binding (the cost of checking them, not of refusals), set as the operator does.
        const rules = {
          fees: { create: { fixed: 1, per_unit: 1 }, redeem: { fixed: 1, per_unit: 1 } },
          max_units_per_conversion: 1000,
          units_per_window: { units: 1_000_000_000, seconds: 60 },
          position_limit: { limit: 2_000_000_000, mode: 'refuse' },
          windows: [{ from: '00:00', to: '12:00' }, { from: '12:00', to: '00:00' }],
        };
        const put = await fetch(`${sys.url}/operator/api/rules`, {
          method: 'PUT',
          headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${OPERATOR.username}:${OPERATOR.password}`).toString('base64')}` },
          body: JSON.stringify(rules),
        });
        if (!put.ok) throw new Error(`setting the rules failed: ${put.status} ${await put.text()}`);
        await measure(sys.url, 'create+rules', front, createRequests, sys.pids);
      }
    } finally {
      await sys.stop();
    }
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const runsOf = (scenario: string, front: string) => rows.filter((r) => r.scenario === scenario && r.front === front);
/** A scenario's figures, the median of its rounds (errors summed). */
const row = (scenario: string, front: string): Row | undefined => {
  const runs = runsOf(scenario, front);
  if (runs.length === 0) return undefined;
  const m = (k: 'rps' | 'p50' | 'p90' | 'p99' | 'cpuUs') => median(runs.map((r) => r[k]));
  const cpuBy = Object.fromEntries(Object.keys(runs[0]!.cpuBy).map((k) => [k, median(runs.map((r) => r.cpuBy[k] ?? 0))]));
  return { round: 0, scenario, front, rps: Math.round(m('rps')), p50: m('p50'), p90: m('p90'), p99: m('p99'), non2xx: runs.reduce((a, r) => a + r.non2xx, 0), errors: runs.reduce((a, r) => a + r.errors, 0), cpuUs: Math.round(m('cpuUs')), cpuBy };
};
const ceiling = row('ceiling', 'uws');
const perRound = rounds > 1 ? `, the median of ${rounds} rounds (each system once per round, in turn)` : '';
console.log(`\n/create throughput, ${connections} connections, ${seconds} s each after ${warmup} s of warm-up at the same load${perRound}, bcrypt cost 10, ${TEAMS} teams\n`);
console.log(`scenario      server           req/s    p50 ms  p90 ms  p99 ms  non-2xx  errors  vs ceiling  CPU µs/req${rounds > 1 ? '  req/s in each round' : ''}`);
const seen = new Set<string>();
for (const { scenario, front } of rows) {
  if (seen.has(`${scenario}\0${front}`)) continue;
  seen.add(`${scenario}\0${front}`);
  const r = row(scenario, front)!;
  const each = rounds > 1 && scenario !== 'ceiling' ? `  ${runsOf(scenario, front).map((x) => x.rps).join(' ')}` : '';
  console.log(
    `${r.scenario.padEnd(13)} ${r.front.padEnd(14)} ${String(r.rps).padStart(7)} ${String(r.p50).padStart(8)} ${String(r.p90).padStart(7)} ${String(r.p99).padStart(7)} ${String(r.non2xx).padStart(8)} ${String(r.errors).padStart(7)}  ${(ceiling ? (r.rps / ceiling.rps).toFixed(3) : 'n/a').padStart(10)}  ${String(r.cpuUs).padStart(10)}${each}`,
  );
}
console.log('\nNATS floor: one process asking another over nats-server (request/reply, 100 bytes, nothing else done); every /create crosses NATS at least twice');
for (const [label, f] of floors) console.log(`  ${label.padEnd(18)} ${String(f.rps).padStart(7)} round trips/s  p50 ${f.p50} ms  p90 ${f.p90} ms  p99 ${f.p99} ms`);
console.log('\nServer CPU per request (µs, medians), by process:');
for (const key of seen) {
  const [scenario, front] = key.split('\0') as [string, string];
  const r = row(scenario, front)!;
  const parts = Object.entries(r.cpuBy).filter(([k]) => !k.endsWith(' kernel'));
  console.log(`  ${scenario.padEnd(13)} ${front.padEnd(14)} ${parts.map(([k, v]) => `${k} ${v} (kernel ${r.cpuBy[`${k} kernel`]})`).join(', ')}`);
}
const chain = row('create', 'chain');
if (chain) {
  console.log(`\nThe naive chain (bench/chain.ts: uWS → JSON.parse → nc.request → echo; no auth, no state, no journal): ${chain.rps} req/s, p99 ${chain.p99} ms, ${chain.cpuUs} µs of server CPU per request`);
  for (const f of fronts) {
    const c = row('create', f);
    if (!c) continue;
    const each = rounds > 1 ? ` (each round: req/s ${runsOf('create', f).map((x, i) => (x.rps / runsOf('create', 'chain')[i]!.rps).toFixed(2)).join(' ')}; CPU ${runsOf('create', f).map((x, i) => (x.cpuUs / runsOf('create', 'chain')[i]!.cpuUs).toFixed(2)).join(' ')})` : '';
    console.log(`  /create on ${f}: ${(c.rps / chain.rps).toFixed(2)}× the chain's req/s, ${(c.cpuUs / chain.cpuUs).toFixed(2)}× its server CPU per request, p99 ${c.p99} ms vs ${chain.p99} ms${each}`);
  }
  const batched = row('create', 'batched');
  if (batched) {
    const each = rounds > 1 ? ` (each round: CPU ${runsOf('create', 'batched').map((x, i) => (x.cpuUs / runsOf('create', 'chain')[i]!.cpuUs).toFixed(2)).join(' ')})` : '';
    console.log(`The same chain with the gateway's batching (bench/batched-chain.ts; still no auth, state or journal): ${batched.rps} req/s, p99 ${batched.p99} ms, ${batched.cpuUs} µs: ${(batched.rps / chain.rps).toFixed(2)}× the chain's req/s, ${(batched.cpuUs / chain.cpuUs).toFixed(2)}× its CPU per request${each}`);
    for (const f of fronts) {
      const c = row('create', f);
      if (c) console.log(`  /create on ${f} costs ${c.cpuUs - batched.cpuUs} µs per request more than it: authentication, validation, state, the journal, notices and the holdings in the answer`);
    }
  }
}
console.log('\n"ceiling": uWS answering the same POST with nothing behind it (bench/ceiling.ts); "vs ceiling": share of bare uWS\'s rate.');
// The chains are on the same nats-server as the product, so a setting of the launcher's server (natsServerEnv) is not counted as the product's gain.
console.log(`Every system here, the chains and a baseline included, runs on a nats-server started as the launcher starts one (GOMAXPROCS ${natsServerEnv(process.env).GOMAXPROCS}).`);
const ratio = (a?: Row, b?: Row) => (a && b ? `${(a.rps / b.rps).toFixed(2)}×` : 'n/a');
for (const scenario of ['health', 'holdings', 'create', 'create+rules']) {
  if (row(scenario, 'node') && row(scenario, 'uws')) console.log(`${scenario}: node runs at ${ratio(row(scenario, 'node'), row(scenario, 'uws'))} the uws rate`);
}
if (baseline) {
  for (const scenario of ['health', 'holdings', 'create', 'create+rules']) {
    const base = row(scenario, `base ${ref}`);
    if (!base) continue;
    // With rounds, each round's own ratio too: a system and the baseline measured minutes apart are compared within the same round.
    const inRounds = (f: string) => {
      if (rounds === 1) return '';
      const own = runsOf(scenario, f);
      const theirs = runsOf(scenario, `base ${ref}`);
      return ` (each round: ${own.map((r, i) => (theirs[i] ? (r.rps / theirs[i]!.rps).toFixed(2) : 'n/a')).join(' ')})`;
    };
    console.log(`${scenario}: ${fronts.map((f) => `${f} ${ratio(row(scenario, f), base)}${inRounds(f)}`).join(', ')} the rate of ${ref}`);
  }
  const atRate = `create@${offered}`;
  const base = row(atRate, `base ${ref}`);
  if (base) console.log(`/create offered at ${offered} req/s: p99 ${fronts.map((f) => `${f} ${row(atRate, f)?.p99 ?? 'n/a'} ms`).join(', ')}; ${ref} ${base.p99} ms (it carried ${base.rps} req/s)`);
  baseline.remove();
}
const create = row('create', fronts[0]!);
const ruled = row('create+rules', fronts[0]!);
if (create && ruled) console.log(`/create with every conversion rule on: ${ratio(ruled, create)} the rate with rules off`);
