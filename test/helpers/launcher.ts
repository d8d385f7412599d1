import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../../src/config/config.js';
import { freePort } from '../../src/shared/ports.js';
import { feedAddrs } from './feed.js';

export interface LauncherRun {
  child: ChildProcess;
  /** Every log line so far, parsed (JSON logs: stdout is not a TTY). */
  lines: Record<string, any>[];
  exited: Promise<number | null>;
  /** Resolves once its output has ended too (every line read): after `exited`, when the children it started are gone. */
  closed: Promise<void>;
  /** Resolves with the first log line that `match` accepts (rejects if the launcher exits first). */
  waitForLine(match: (l: Record<string, any>) => boolean, what: string, timeoutMs?: number): Promise<Record<string, any>>;
}

/**
 * The real `npm start` entry point (dist/src/launcher/main.js) as its own process;
 * with `npm`, `npm start` itself, as the leader of its own process group, the
 * way a terminal runs a foreground job (signal the group, -pid, for a Ctrl-C).
 */
export function runLauncher(env: NodeJS.ProcessEnv, opts: { npm?: boolean } = {}): LauncherRun {
  const fullEnv = { ...process.env, LOG_FORMAT: 'json', LOG_LEVEL: 'info', ...env };
  const child = opts.npm
    ? spawn('npm', ['start', '--silent'], { cwd: PROJECT_ROOT, env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    : spawn(process.execPath, [join(PROJECT_ROOT, 'dist/src/launcher/main.js')], { env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, any>[] = [];
  const waiters = new Set<() => void>();
  const onLine = (text: string) => {
    try {
      lines.push(JSON.parse(text) as Record<string, any>);
    } catch {
      lines.push({ msg: text });
    }
    for (const w of waiters) w();
  };
  createInterface({ input: child.stdout! }).on('line', onLine);
  createInterface({ input: child.stderr! }).on('line', onLine);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const closed = new Promise<void>((r) => child.once('close', () => r()));
  const waitForLine = (match: (l: Record<string, any>) => boolean, what: string, timeoutMs = 30_000) =>
    new Promise<Record<string, any>>((resolve, reject) => {
      const check = () => {
        const hit = lines.find(match);
        if (hit) {
          done();
          resolve(hit);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`launcher: no log line "${what}" in ${timeoutMs} ms; last lines:\n${lines.slice(-10).map((l) => JSON.stringify(l)).join('\n')}`));
      }, timeoutMs);
      const onExit = () => {
        setImmediate(() => {
          done();
          reject(new Error(`launcher exited before "${what}"; last lines:\n${lines.slice(-10).map((l) => JSON.stringify(l)).join('\n')}`));
        });
      };
      const done = () => {
        clearTimeout(timer);
        waiters.delete(check);
        child.off('exit', onExit);
      };
      waiters.add(check);
      child.once('exit', onExit);
      check();
    });
  return { child, lines, exited, closed, waitForLine };
}

/** Environment for a launcher run that collides with nothing: free ports, fresh multicast groups, no simulator unless asked. */
export async function launcherEnv(dataDir: string, accountsFile: string, extra: NodeJS.ProcessEnv = {}): Promise<NodeJS.ProcessEnv> {
  const feeds = await feedAddrs();
  const addr = (a: { group: string; port: number }) => `${a.group}:${a.port}`;
  return {
    DATA_DIR: dataDir,
    ACCOUNTS_FILE: accountsFile,
    HTTP_HOST: '127.0.0.1',
    HTTP_PORT: String(await freePort()),
    NATS_PORT: String(await freePort()),
    NATS_URL: '',
    BCRYPT_ROUNDS: '4',
    NDFEX_SIMULATOR: 'off',
    NDFEX_CLEARING_ADDR: addr(feeds.clearing),
    NDFEX_MD_ADDR: addr(feeds.marketData),
    NDFEX_SNAPSHOT_ADDR: addr(feeds.snapshot),
    ...extra,
  };
}
