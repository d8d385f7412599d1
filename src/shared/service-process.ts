import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Logger } from './log.js';
import { CONFIG_EXIT_CODE } from '../config/config.js';
import { LAUNCHER_PID_VAR } from '../config/process.js';

/**
 * The one way the launcher, tests and benches run a service as a child
 * process: spawn it, know when it is ready, stop it (startService); and for
 * the launcher, keep it running (Supervisor).
 */

/**
 * Node flags for every service. A young generation of 32 MB instead of V8's
 * default (16 MB at most): a gateway or engine under load allocates per
 * request, and with the default the scavenger ran several times a second and
 * took ~10% of the gateway's CPU (perf, `/create` at saturation); with 32 MB
 * under 1%, for at most ~64 MB more memory per process.
 */
export const SERVICE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=32'];

/** The services the launcher runs, each from dist/src/<kind>/main.js. */
export type ServiceKind = 'engine' | 'gateway' | 'pricing' | 'feed' | 'sim';

/**
 * A service's Node flags: SERVICE_NODE_FLAGS, and for the gateway V8's
 * allocation-site pretenuring off. The gateway's per-request objects live a
 * few milliseconds; pretenured, they were promoted as if they lived long. Most
 * of what the sixth session measured here (~3.7 MB promoted per scavenge,
 * scavenges of 6-17 ms) turned out to be the engine client's stale Map
 * entries (EngineClient.settle); with those gone the flag still counts: at
 * 6,000 /create a second 0.16 MB survive a scavenge with it and 0.62 MB
 * without (docs/scale-plan.md). The engine measured the same either way, and
 * keeps it (its snapshot, loaded at start, is long-lived).
 */
export function serviceNodeFlags(service: ServiceKind): readonly string[] {
  return service === 'gateway' ? [...SERVICE_NODE_FLAGS, '--no-allocation-site-pretenuring'] : SERVICE_NODE_FLAGS;
}

/** What a service sends over its IPC channel once it serves (src/shared/process.ts announceReady). */
export interface ReadyMessage {
  ready: string;
  /** What its ready log line says (the engine's: its journal and snapshot sequence, start-up times). */
  details?: Record<string, unknown>;
}

const isReadyMessage = (m: unknown): m is ReadyMessage => typeof m === 'object' && m !== null && typeof (m as ReadyMessage).ready === 'string';

export interface ServiceSpec {
  /** For error messages and the supervisor's logs. */
  name: string;
  /** Default: this Node binary. */
  command?: string;
  args: string[];
  /** Default: this process's environment. */
  env?: NodeJS.ProcessEnv;
  /**
   * How it says it is ready: 'message', a {ready} message over an IPC channel
   * (this project's services); or a line of its output, for programs that
   * cannot send one (nats-server, a bench script, another tree's older build).
   */
  ready: 'message' | ((line: string) => boolean);
  /** Which output is read line by line (for a ready line or `onLine`; nats-server logs on stderr). Default stdout; the other stream is inherited. */
  readyOn?: 'stdout' | 'stderr';
  /** Every line of that output, before ready and after (e.g. to keep a service's log). Without it and without a ready line, its output is inherited. */
  onLine?: (line: string) => void;
  /** Reject if not ready by then (default: wait as long as it lives). */
  timeoutMs?: number;
  /**
   * Its own process group (and session), so a terminal's Ctrl-C, which signals
   * the whole foreground group, does not reach it: whoever started it stops it.
   */
  detached?: boolean;
}

/** A running service: R is what said it was ready (the ready message's details, or the ready line). */
export interface ServiceProcess<R = string> {
  child: ChildProcess;
  ready: R;
  /** Resolves with the exit code (null after a signal) once the process is gone. */
  exited: Promise<number | null>;
  /** Sends `signal` (default SIGTERM), SIGKILL after `graceMs` (calling `onKill` then), resolves once it is gone. */
  stop(signal?: NodeJS.Signals, graceMs?: number, onKill?: () => void): Promise<void>;
}

type Spawned = Omit<ServiceProcess<string | Record<string, unknown>>, 'ready'> & { ready: Promise<string | Record<string, unknown>> };

/** The last lines a service printed before it died, for the error that says so. */
const TAIL_LINES = 20;

/** Starts the process; `ready` settles once it says so, or rejects when it dies (or times out) first. */
function spawnService(spec: ServiceSpec): Spawned {
  const on = spec.readyOn ?? 'stdout';
  const read = spec.ready !== 'message' || spec.onLine !== undefined;
  const stdio: StdioOptions = ['ignore', read && on === 'stdout' ? 'pipe' : 'inherit', read && on === 'stderr' ? 'pipe' : 'inherit'];
  if (spec.ready === 'message') stdio.push('ipc');
  const child = spawn(spec.command ?? process.execPath, spec.args, { env: spec.env, stdio, detached: spec.detached ?? false });
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    // A process that never started (its binary gone, EAGAIN) has no 'exit': without this its supervisor waited for ever.
    child.once('error', () => {
      if (child.pid === undefined) resolve(null);
    });
  });
  const stop = async (signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000, onKill?: () => void): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    const timer = setTimeout(() => {
      onKill?.();
      child.kill('SIGKILL');
    }, graceMs);
    await exited;
    clearTimeout(timer);
  };
  const tail: string[] = [];
  const ready = new Promise<string | Record<string, unknown>>((resolve, reject) => {
    let started = false;
    const timer =
      spec.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            void stop('SIGKILL');
            reject(new Error(`${spec.name} was not ready within ${spec.timeoutMs} ms:\n${tail.join('\n')}`));
          }, spec.timeoutMs);
    const isReady = (what: string | Record<string, unknown>) => {
      started = true;
      clearTimeout(timer);
      resolve(what);
    };
    if (read) {
      // Keep reading after ready: a full pipe would block the child.
      createInterface({ input: (on === 'stdout' ? child.stdout : child.stderr)! }).on('line', (line) => {
        spec.onLine?.(line);
        if (started) return;
        tail.push(line);
        if (tail.length > TAIL_LINES) tail.shift();
        if (spec.ready !== 'message' && spec.ready(line)) isReady(line);
      });
    }
    if (spec.ready === 'message') {
      child.on('message', (m) => {
        if (started || !isReadyMessage(m)) return;
        isReady(m.details ?? {});
        // The channel has said what it is for: it must not keep this process alive.
        child.channel?.unref();
      });
    }
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (!started) reject(new Error(`${spec.name} exited with ${code ?? signal} before it was ready${tail.length > 0 ? `:\n${tail.join('\n')}` : ''}`));
    });
  });
  return { child, ready, exited, stop };
}

/** Starts a service and resolves once it is ready: with its ready message's details, or its ready line. */
export function startService(spec: ServiceSpec & { ready: 'message' }): Promise<ServiceProcess<Record<string, unknown>>>;
export function startService(spec: ServiceSpec & { ready: (line: string) => boolean }): Promise<ServiceProcess<string>>;
export async function startService(spec: ServiceSpec): Promise<ServiceProcess<string | Record<string, unknown>>> {
  const s = spawnService(spec);
  return { ...s, ready: await s.ready };
}

/** A service the Supervisor keeps running: always in its own process group, its environment `env` and the launcher's pid. */
export type SupervisedSpec = Omit<ServiceSpec, 'detached' | 'timeoutMs' | 'env'> & { env: NodeJS.ProcessEnv };

/**
 * Runs services as child processes and restarts one that dies (with a
 * growing pause, reset after a minute of health), so a crashed engine comes
 * back and rebuilds its state from the journal on its own.
 */
export class Supervisor {
  private readonly running = new Map<string, Spawned>();
  /**
   * Names in the order they were first started: a restarted service goes back
   * into `running` last, and stopping in that Map's order would stop it first
   * (a restarted feed bridge before the simulator, whose last fills nobody then hears).
   */
  private readonly order: string[] = [];
  private stopping = false;
  private readonly ready = new Map<string, { promise: Promise<void>; resolve: () => void }>();

  /** `onFatal`: a service exited with CONFIG_EXIT_CODE (a configuration error, an unreadable journal record); restarting it would only fail again. */
  constructor(
    private readonly log: Logger,
    private readonly onFatal: (service: string) => void,
  ) {}

  start(spec: SupervisedSpec, restarts = 0): void {
    // A stop that came during the launcher's own start-up: nothing more starts.
    if (this.stopping) return;
    const startedAt = Date.now();
    // Its own process group: a terminal's Ctrl-C reaches the launcher alone, which stops the services in order.
    const s = spawnService({ ...spec, env: { ...spec.env, [LAUNCHER_PID_VAR]: String(process.pid) }, detached: true });
    this.running.set(spec.name, s);
    if (!this.order.includes(spec.name)) this.order.push(spec.name);
    let spawnError: Error | null = null;
    s.child.once('error', (err) => {
      if (s.child.pid === undefined) spawnError = err;
    });
    // Dying before ready is the exit below's to handle.
    s.ready.then(() => this.readiness(spec.name).resolve(), () => {});
    void s.exited.then((code) => {
      this.running.delete(spec.name);
      if (this.stopping) return;
      if (code === CONFIG_EXIT_CODE) {
        // A configuration mistake or a journal record the engine cannot replay: a restart would meet it again.
        this.log.fatal({ service: spec.name, code }, `${spec.name} stopped on what only the operator can fix (its line above says what): not restarting it`);
        this.onFatal(spec.name);
        return;
      }
      const healthy = Date.now() - startedAt > 60_000;
      const n = healthy ? 0 : restarts + 1;
      const pause = Math.min(10_000, 250 * 2 ** n);
      if (spawnError) this.log.error({ service: spec.name, command: spec.command ?? process.execPath, err: (spawnError as Error).message, restartInMs: pause }, 'service could not be started: trying again');
      else this.log.error({ service: spec.name, code, signal: s.child.signalCode, restartInMs: pause }, 'service exited: restarting');
      setTimeout(() => !this.stopping && this.start(spec, n), pause);
    });
  }

  /** Resolves once the service has said it is ready, in this run or a restarted one. */
  whenReady(name: string): Promise<void> {
    return this.readiness(name).promise;
  }

  private readiness(name: string): { promise: Promise<void>; resolve: () => void } {
    let r = this.ready.get(name);
    if (!r) {
      let resolve!: () => void;
      const promise = new Promise<void>((res) => (resolve = res));
      r = { promise, resolve };
      this.ready.set(name, r);
    }
    return r;
  }

  /** SIGKILL to every service still running: the launcher is exiting without a clean stop (a crash), and must orphan none. */
  killAll(): void {
    for (const { child } of this.running.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }

  /** Stops services in the reverse order they were first started, whichever of them restarted since. */
  async stopAll(): Promise<void> {
    this.stopping = true;
    for (const name of [...this.order].reverse()) {
      const s = this.running.get(name);
      // One waiting for its restart is not running: there is nothing to stop, and `stopping` keeps it from starting.
      if (!s) continue;
      await s.stop('SIGTERM', 10_000, () => this.log.warn({ service: name }, 'did not stop in 10 s: killing'));
    }
  }
}
