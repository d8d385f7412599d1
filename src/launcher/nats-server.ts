import { spawnSync, type ChildProcess } from 'node:child_process';
import { startService } from '../shared/service-process.js';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../config/config.js';

export interface NatsServer {
  url: string;
  port: number;
  proc: ChildProcess;
  /** SIGTERM (clean) or SIGKILL (crash), and wait for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Finds nats-server, installing Debian's package through scripts/ensure-nats-server.sh when missing. */
export function natsServerBinary(): string {
  const find = () => ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'].find((p) => existsSync(p));
  let bin = find();
  if (!bin) {
    const r = spawnSync('bash', [join(PROJECT_ROOT, 'scripts/ensure-nats-server.sh')], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error('nats-server is not installed and could not be installed (apt-get install nats-server)');
    bin = find();
  }
  if (!bin) throw new Error('nats-server installed but not found in /usr/sbin, /usr/bin or /usr/local/bin');
  return bin;
}

export { freePort } from '../shared/ports.js';

/** Where a launcher's nats-server writes its pid: beside its store. */
const natsPidFile = (storeDir: string): string => `${storeDir.replace(/\/+$/, '')}.pid`;

/**
 * Stops a nats-server still running on `storeDir` because the launcher that
 * started it was killed outright (SIGKILL, OOM): it runs in its own process
 * group, so nothing else stops it, and a new one could not take its store or
 * port. Returns its pid when there was one.
 */
export async function stopOrphanNats(storeDir: string): Promise<number | null> {
  let pid: number;
  try {
    pid = Number(readFileSync(natsPidFile(storeDir), 'utf8').trim());
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  // The pid may be another process's by now: only a nats-server on this very store is ours.
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch (err) {
    // No such process any more: nothing left running.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ESRCH') return null;
    throw err;
  }
  const argv = cmdline.split('\0');
  if (!argv[0]?.endsWith('nats-server') || argv[argv.indexOf('-sd') + 1] !== storeDir) return null;
  process.kill(pid, 'SIGTERM');
  for (let waited = 0; existsSync(`/proc/${pid}`); waited += 50) {
    if (waited >= 10_000) process.kill(pid, 'SIGKILL');
    await sleep(50);
  }
  return pid;
}

/**
 * The embedded server's environment: GOMAXPROCS 1 unless the environment sets
 * it. On the class's 2-core machines nats-server shares the cores with the
 * gateway, the engine and the bridge, and Go's scheduler, free to run two
 * threads, spent a quarter of the server's CPU waking and parking them
 * (futex, nanosleep): at 5,000 /create a second, 17-19 µs of its CPU per
 * request with one against 23-30 with two, in alternating runs. One core is
 * ~5x what it uses at the gateway's saturation. A server of its own machine
 * (NATS_URL, a cluster) is not started here and keeps Go's default.
 */
export function natsServerEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...env, GOMAXPROCS: env.GOMAXPROCS || '1' };
}

/**
 * Starts a JetStream-enabled nats-server on loopback with its store in
 * `storeDir`, and resolves once it reports ready.
 */
export async function startNatsServer(opts: {
  port: number;
  storeDir: string;
  host?: string;
  /** A config file (users and permissions: src/launcher/nats-auth.ts; a cluster node's routes: nats-cluster.ts); without one the server is open and alone. */
  configFile?: string;
  /** The server's name (default `etf-<port>`); a cluster node's must stay the same across restarts: JetStream knows its peers by name. */
  serverName?: string;
  onExit?: (code: number | null) => void;
  /** In its own process group, so a terminal's Ctrl-C reaches only the launcher, which stops the services first and this server last. */
  ownProcessGroup?: boolean;
}): Promise<NatsServer> {
  const bin = natsServerBinary();
  const host = opts.host ?? '127.0.0.1';
  mkdirSync(opts.storeDir, { recursive: true });
  const args = ['-js', '-sd', opts.storeDir, '-a', host, '-p', String(opts.port), '-n', opts.serverName ?? `etf-${opts.port}`];
  if (opts.configFile) args.unshift('-c', opts.configFile);
  if (opts.ownProcessGroup) args.push('-P', natsPidFile(opts.storeDir));
  const service = await startService({
    name: 'nats-server',
    command: bin,
    args,
    env: natsServerEnv(process.env),
    readyOn: 'stderr',
    ready: (line) => line.includes('Server is ready'),
    detached: opts.ownProcessGroup ?? false,
  });
  const proc = service.child;
  void service.exited.then((code) => opts.onExit?.(code));
  return {
    url: `nats://${host}:${opts.port}`,
    port: opts.port,
    proc,
    stop: (signal = 'SIGTERM') => service.stop(signal),
  };
}
