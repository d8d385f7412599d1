import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Logger } from '../shared/log.js';
import { CONFIG_EXIT_CODE } from '../config/config.js';
import { LAUNCHER_PID_VAR } from '../shared/process.js';

export interface ServiceSpec {
  name: string;
  /** Path of the compiled entry point. */
  script: string;
  env: NodeJS.ProcessEnv;
  /** The Node binary to run it with (default: this one). */
  execPath?: string;
  /** The log line that says it is up; whenReady() waits for it. Its stdout then passes through the launcher. */
  ready?: (line: string) => boolean;
}

/**
 * Runs services as child processes and restarts one that dies (with a
 * growing pause, reset after a minute of health), so a crashed engine comes
 * back and rebuilds its state from the journal on its own.
 */
export class Supervisor {
  private readonly children = new Map<string, ChildProcess>();
  private stopping = false;
  private readonly ready = new Map<string, { promise: Promise<void>; resolve: () => void }>();

  /** `onFatal`: a service exited with CONFIG_EXIT_CODE (a configuration error, an unreadable journal record); restarting it would only fail again. */
  constructor(
    private readonly log: Logger,
    private readonly onFatal: (service: string) => void,
  ) {}

  start(spec: ServiceSpec, restarts = 0): void {
    // A stop that came during the launcher's own start-up: nothing more starts.
    if (this.stopping) return;
    const startedAt = Date.now();
    // Its own process group: a terminal's Ctrl-C reaches the launcher alone, which stops the services in order.
    const child = spawn(spec.execPath ?? process.execPath, ['--enable-source-maps', spec.script], {
      env: { ...spec.env, [LAUNCHER_PID_VAR]: String(process.pid) },
      stdio: ['ignore', spec.ready ? 'pipe' : 'inherit', 'inherit'],
      detached: true,
    });
    this.children.set(spec.name, child);
    if (spec.ready) {
      const isReady = spec.ready;
      const waiter = this.readiness(spec.name);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        process.stdout.write(`${line}\n`);
        if (isReady(line)) waiter.resolve();
      });
    }
    child.once('exit', (code, signal) => {
      this.children.delete(spec.name);
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
      this.log.error({ service: spec.name, code, signal, restartInMs: pause }, 'service exited: restarting');
      setTimeout(() => !this.stopping && this.start(spec, n), pause);
    });
  }

  /** Resolves once the service has said it is up (its `ready` line), in this run or a restarted one. */
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
    for (const child of this.children.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }

  /** Stops services in the reverse order they were started. */
  async stopAll(): Promise<void> {
    this.stopping = true;
    for (const [name, child] of [...this.children].reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        this.log.warn({ service: name }, 'did not stop in 10 s: killing');
        child.kill('SIGKILL');
      }, 10_000);
      await exited;
      clearTimeout(timer);
    }
  }
}
