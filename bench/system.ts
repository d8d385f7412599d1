import { startService, serviceNodeFlags, type ServiceKind, type ServiceProcess } from '../src/shared/service-process.js';
import { join } from 'node:path';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { PROJECT_ROOT, type Config } from '../src/config/config.js';
import { freePort, startNatsServer, type NatsServer } from '../src/launcher/nats-server.js';

/**
 * The system as it runs in production, for benchmarks: nats-server, engine
 * and gateway each in its own process, so the load generator in this process
 * does not share their event loops.
 */
export interface BenchSystem {
  nats: NatsServer;
  url: string;
  cfg: Config;
  /** Every server process, for CPU accounting (bench/cpu.ts). */
  pids: Record<string, number>;
  stop(): Promise<void>;
}

/** Starts a built script (relative to dist/), ready once it prints a line containing `readyLine`. */
export function spawnService(script: string, env: NodeJS.ProcessEnv, readyLine: string, nodeFlags: string[] = [], root = PROJECT_ROOT): Promise<ServiceProcess> {
  return startService({ name: script, args: [...nodeFlags, join(root, 'dist', script)], env, ready: (l) => l.includes(readyLine) });
}

/**
 * A built service of `root`: this tree's is ready on its ready message (src/shared/process.ts);
 * another tree's build (bench/baseline.ts) may predate those, so there on a line containing `readyLine`.
 */
function spawnBuiltService(script: string, env: NodeJS.ProcessEnv, readyLine: string, nodeFlags: string[], root: string): Promise<ServiceProcess<unknown>> {
  if (root !== PROJECT_ROOT) return spawnService(script, env, readyLine, nodeFlags, root);
  // Its log is read and dropped, as a ready line's service's is: the figures are the output.
  return startService({ name: script, args: [...nodeFlags, join(root, 'dist', script)], env, ready: 'message', onLine: () => {} });
}

/** A config for benchmarks: the roster written to `dir`, loopback addresses, the given NATS. */
export function benchConfig(dir: string, nats: { url: string; port: number }, roster: string, overrides: Partial<Config> = {}): Config {
  const accountsFile = join(dir, 'accounts.txt');
  writeFileSync(accountsFile, roster);
  return {
    http: { host: '127.0.0.1', port: 0, maxBodyBytes: 16384 },
    nats: { url: nats.url, port: nats.port },
    dataDir: dir,
    accountsFile,
    basketsFile: '',
    maxAmount: 1_000_000,
    bcryptRounds: 10,
    requestTimeoutMs: 10_000,
    snapshotEvery: 100_000,
    logLevel: 'info',
    ...overrides,
  };
}

/** `n` roster lines: client_id i, team<i>, team<i>pass. */
export const benchRoster = (n: number): string => Array.from({ length: n }, (_, i) => `${i + 1} team${i + 1} team${i + 1}pass`).join('\n');

/** `root`: the project whose built services run (another tree's, for a baseline: bench/baseline.ts). */
export async function startBenchSystem(roster: string, overrides: Partial<Config> = {}, root = PROJECT_ROOT): Promise<BenchSystem> {
  const dir = mkdtempSync(join(tmpdir(), 'etf-bench-'));
  const nats = await startNatsServer({ port: await freePort(), storeDir: join(dir, 'nats') });
  const httpPort = await freePort();
  const cfg = benchConfig(dir, nats, roster, { ...overrides, http: { maxBodyBytes: 16384, ...overrides.http, host: '127.0.0.1', port: httpPort } });
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, JSON.stringify(cfg));
  const env = { ...process.env, CONFIG_FILE: configFile, NATS_URL: nats.url, LOG_LEVEL: 'info' };
  // This tree's services run with the flags its launcher gives them (serviceNodeFlags); a baseline ref's as its own launcher ran them.
  // BENCH_PROFILE=engine|gateway writes that service's CPU profile to .bench/ when it stops.
  // BENCH_PERF=engine|gateway writes /tmp/perf-<pid>.map for that service, so `perf record -p <pid>` names its JIT-compiled functions
  // (a V8 profile samples wall time: a thread preempted in a write looks busy; perf's cpu-clock counts CPU only).
  const profiled = (name: ServiceKind) => [
    ...(root === PROJECT_ROOT ? serviceNodeFlags(name) : []),
    ...(process.env.BENCH_PROFILE === name ? ['--cpu-prof', `--cpu-prof-dir=${join(PROJECT_ROOT, '.bench')}`] : []),
    ...(process.env.BENCH_PERF === name ? ['--perf-basic-prof'] : []),
  ];
  let engine: ServiceProcess<unknown> | undefined;
  let gateway: ServiceProcess<unknown>;
  try {
    engine = await spawnBuiltService('src/engine/main.js', env, '"engine ready"', profiled('engine'), root);
    gateway = await spawnBuiltService('src/gateway/main.js', env, '"gateway listening"', profiled('gateway'), root);
  } catch (err) {
    // Leave nothing running behind a failed start.
    if (engine) await engine.stop();
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    nats,
    url: `http://127.0.0.1:${httpPort}`,
    cfg,
    pids: { gateway: gateway.child.pid!, engine: engine.child.pid!, 'nats-server': nats.proc.pid! },
    stop: async () => {
      await gateway.stop();
      await engine!.stop();
      await nats.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
