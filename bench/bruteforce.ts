/**
 * A legit team's /holdings latency (p50/p99) at baseline and during a brute
 * force of wrong passwords from another address, with the gateway's default
 * throttle on, and the same with the throttle off for comparison.
 * Target: during the attack, within 2× of the baseline with the throttle on.
 *
 * The legit load is autocannon (BENCH_LEGIT_RATE requests/s over
 * BENCH_CONNECTIONS connections from 127.0.0.1); the attacker sends BENCH_ATTACK_RATE wrong passwords per
 * second from 250 rotating addresses (127.0.1.x), half for the legit team's own username, half for
 * unknown ones. Every loopback address counts as a host of its own here (throttle.loopback
 * 'each': many machines played from one), and the gateway's login cache expires every
 * second (credentialsCacheMs), so the team logs in again and again under attack: its
 * non-2xx count must stay 0 (it was ~6 s of 429 every ~37 s before hosts proved their logins).
 * Services run in their own processes (bench/system.ts).
 * Run: npm run bench:bruteforce   (BENCH_SECONDS per phase, default 6)
 */
import { Agent, request } from 'node:http';
import autocannon from 'autocannon';
import { THROTTLE_DEFAULTS } from '../src/config/config.js';
import { benchRoster, startBenchSystem } from './system.js';

const seconds = Number(process.env.BENCH_SECONDS ?? 6);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 8);
const legitRate = Number(process.env.BENCH_LEGIT_RATE ?? 400);
const attackRate = Number(process.env.BENCH_ATTACK_RATE ?? 100);
const ATTACKERS = Array.from({ length: 250 }, (_, i) => `127.0.1.${i + 1}`);
const basic = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

interface Phase {
  p50: number;
  p99: number;
  rps: number;
  non2xx: number;
}

const quantile = (sorted: number[], q: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : 0);

/**
 * The legit team at a steady rate (below its limits: a strategy polling its
 * holdings). Latencies come from autocannon's per-response timings (float ms),
 * finer than its whole-millisecond histogram.
 */
async function legitLoad(url: string, duration: number): Promise<Phase> {
  const opts = { url: `${url}/holdings`, connections, duration, overallRate: legitRate, headers: { authorization: basic('team1', 'team1pass') } };
  const times: number[] = [];
  const inst = autocannon(opts) as ReturnType<typeof autocannon> & { on(ev: 'response', cb: (client: unknown, status: number, bytes: number, ms: number) => void): void };
  inst.on('response', (_c, _status, _bytes, ms) => times.push(ms));
  const r = await inst;
  times.sort((a, b) => a - b);
  const round = (x: number) => Math.round(x * 100) / 100;
  return { p50: round(quantile(times, 0.5)), p99: round(quantile(times, 0.99)), rps: Math.round(r.requests.average), non2xx: r.non2xx };
}

/** Wrong passwords at a fixed rate from the attacker's address until stopped; counts answers by status. */
function attack(url: string): { stop(): Promise<Record<string, number>> } {
  const { hostname, port } = new URL(url);
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const statuses: Record<string, number> = {};
  const inflight = new Set<Promise<void>>();
  let n = 0;
  const timer = setInterval(() => {
    for (let k = 0; k < attackRate / 100; k++) {
      const i = n++;
      const user = i % 2 === 0 ? 'team1' : `user${i % 5000}`;
      const p = new Promise<void>((resolve) => {
        const req = request({ host: hostname, port, path: '/holdings', localAddress: ATTACKERS[i % ATTACKERS.length], agent, headers: { authorization: basic(user, `guess-${i}`) } }, (res) => {
          statuses[res.statusCode!] = (statuses[res.statusCode!] ?? 0) + 1;
          res.resume();
          res.on('end', resolve);
        });
        req.on('error', () => {
          statuses.error = (statuses.error ?? 0) + 1;
          resolve();
        });
        req.end();
      });
      inflight.add(p);
      void p.then(() => inflight.delete(p));
    }
  }, 10);
  return {
    stop: async () => {
      clearInterval(timer);
      await Promise.all(inflight);
      agent.destroy();
      return statuses;
    },
  };
}

async function run(throttle: boolean) {
  const sys = await startBenchSystem(benchRoster(4), { credentialsCacheMs: 1000, throttle: { ...THROTTLE_DEFAULTS, enabled: throttle, loopback: 'each' } });
  try {
    // Warm-up: the team's one bcrypt and the JIT.
    await legitLoad(sys.url, 1);
    const baseline = await legitLoad(sys.url, seconds);
    const attacker = attack(sys.url);
    const during = await legitLoad(sys.url, seconds);
    const statuses = await attacker.stop();
    return { baseline, during, statuses };
  } finally {
    await sys.stop();
  }
}

const rows: [string, Awaited<ReturnType<typeof run>>][] = [
  ['throttle on', await run(true)],
  ['throttle off', await run(false)],
];
console.log(`\n/holdings of a signed-in team at ${legitRate}/s, ${connections} connections, ${seconds} s per phase; attack: ${attackRate} wrong passwords/s from ${ATTACKERS.length} addresses, login cache 1 s, bcrypt cost 10\n`);
console.log('gateway        phase     req/s   p50 ms  p99 ms  non-2xx   p50 ×   p99 ×   attacker got');
for (const [name, r] of rows) {
  const line = (phase: string, p: Phase, ratios: string, got: string) =>
    console.log(`${name.padEnd(13)}  ${phase.padEnd(8)} ${String(p.rps).padStart(6)} ${String(p.p50).padStart(8)} ${String(p.p99).padStart(7)} ${String(p.non2xx).padStart(8)}  ${ratios}  ${got}`);
  line('baseline', r.baseline, '   1.00    1.00', '');
  const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : a > 0 ? 'inf' : '1.00').padStart(7);
  line('attack', r.during, `${ratio(r.during.p50, r.baseline.p50)} ${ratio(r.during.p99, r.baseline.p99)}`, JSON.stringify(r.statuses));
}
const on = rows[0]![1];
const p99Ratio = on.baseline.p99 > 0 ? on.during.p99 / on.baseline.p99 : 1;
console.log(`\nthrottle on: p99 during the attack ${p99Ratio.toFixed(2)}× the baseline (target ≤ 2×): ${p99Ratio <= 2 ? 'met' : 'NOT met'}`);
console.log(`throttle on: the team's non-2xx during the attack ${on.during.non2xx} (target 0): ${on.during.non2xx === 0 ? 'met' : 'NOT met'}`);
