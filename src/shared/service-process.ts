import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/**
 * A child process that counts as started once it prints a line saying so:
 * the one way benches, tests and the launcher start a service and wait for it.
 */
export interface ServiceProcess {
  child: ChildProcess;
  /** The line that said it was ready. */
  ready: string;
  /** Resolves with the exit code (null after a signal) once the process is gone. */
  exited: Promise<number | null>;
  /** Sends `signal` (default SIGTERM), SIGKILL after `graceMs`, resolves once it is gone. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

export interface ServiceSpec {
  /** For error messages. */
  name: string;
  /** Default: this Node binary. */
  command?: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  /** Which output says it is ready (nats-server logs on stderr). Default stdout; the other stream is inherited. */
  readyOn?: 'stdout' | 'stderr';
  ready: (line: string) => boolean;
  /** Every line of that stream, ready or not (e.g. to echo warnings, or keep a start-up log). */
  onLine?: (line: string) => void;
  /** Reject if not ready by then (default: wait as long as it lives). */
  timeoutMs?: number;
  /**
   * Its own process group (and session), so a terminal's Ctrl-C, which signals
   * the whole foreground group, does not reach it: whoever started it stops it.
   */
  detached?: boolean;
}

/** The last lines a service printed before it died, for the error that says so. */
const TAIL_LINES = 20;

export function startService(spec: ServiceSpec): Promise<ServiceProcess> {
  const on = spec.readyOn ?? 'stdout';
  const child = spawn(spec.command ?? process.execPath, spec.args, {
    env: spec.env ?? process.env,
    stdio: ['ignore', on === 'stdout' ? 'pipe' : 'inherit', on === 'stderr' ? 'pipe' : 'inherit'],
    detached: spec.detached ?? false,
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  const tail: string[] = [];
  return new Promise((resolve, reject) => {
    let started = false;
    const timer =
      spec.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            void stop('SIGKILL');
            reject(new Error(`${spec.name} was not ready within ${spec.timeoutMs} ms:\n${tail.join('\n')}`));
          }, spec.timeoutMs);
    // Keep reading after ready: a full pipe would block the child.
    createInterface({ input: (on === 'stdout' ? child.stdout : child.stderr)! }).on('line', (line) => {
      spec.onLine?.(line);
      if (started) return;
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
      if (!spec.ready(line)) return;
      started = true;
      clearTimeout(timer);
      resolve({ child, ready: line, exited, stop });
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (!started) reject(new Error(`${spec.name} exited with ${code ?? signal} before it was ready:\n${tail.join('\n')}`));
    });
  });
}
