import { CONFIG_EXIT_CODE, NeedsOperator, type Config } from '../config/config.js';
import type { ProcessSettings } from '../config/process.js';
import { processLogger, type Logger } from './log.js';
import type { ReadyMessage } from './service-process.js';

/**
 * Runs `close` once on SIGINT/SIGTERM, then exits; a second signal exits at
 * once. A service the launcher started (in its own process group; `launcherPid`
 * from its ProcessSettings) also stops when the launcher is gone, killed
 * without the chance to stop it: no orphan keeps serving.
 */
export function onShutdown(log: Logger, close: () => Promise<void>, launcherPid: number | null = null): void {
  let closing = false;
  const handler = (signal: string) => {
    if (closing) process.exit(1);
    closing = true;
    log.info({ signal }, 'shutting down');
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => handler('SIGINT'));
  process.on('SIGTERM', () => handler('SIGTERM'));
  if (launcherPid !== null) {
    // Reparented (to init or a subreaper) once the launcher is gone; Linux has no portable death signal for Node.
    const watch = setInterval(() => {
      if (process.ppid === launcherPid || closing) return;
      clearInterval(watch);
      handler('launcher gone');
    }, 500);
    watch.unref();
  }
}

/**
 * Tells whoever started this process (over the IPC channel, when it opened
 * one: src/shared/service-process.ts) that it is ready, with what its ready
 * log line says. Only an entry point calls this: library code runs inside
 * tests' workers too, whose channel is the test runner's.
 */
export function announceReady(name: string, details: Record<string, unknown> = {}): void {
  if (!process.send) return;
  process.send({ ready: name, details } satisfies ReadyMessage);
  // The channel must not keep a stopping process alive.
  process.channel?.unref();
}

/**
 * Ends a process whose start failed: what only the operator can fix (a
 * configuration mistake, an unreadable journal record) in one line and
 * CONFIG_EXIT_CODE (the launcher does not restart it), anything else with 1.
 */
export function exitOnStartError(log: Logger, name: string, err: unknown): never {
  if (err instanceof NeedsOperator) {
    log.fatal(`${name}: ${err.message}`);
    process.exit(CONFIG_EXIT_CODE);
  }
  log.fatal({ err: err instanceof Error ? err.message : err }, `${name} failed to start`);
  process.exit(1);
}

/**
 * The entry point of a NATS service (engine, gateway, pricing): its config
 * (`load`, the entry point's parser), a logger, NATS_URL required, start,
 * a ready message, clean stop on SIGINT/SIGTERM, and a clear fatal log and
 * exit code when start-up fails.
 */
export async function runService(
  name: string,
  settings: ProcessSettings,
  load: () => Config,
  start: (cfg: Config, natsUrl: string, log: Logger) => Promise<{ close(): Promise<void>; ready?: Record<string, unknown> }>,
): Promise<void> {
  let cfg: Config;
  try {
    cfg = load();
  } catch (err) {
    exitOnStartError(processLogger(name, settings), name, err);
  }
  const log = processLogger(name, settings, cfg.logLevel);
  if (!cfg.nats.url) {
    log.fatal(`NATS_URL is not set: run the ${name} through the launcher (npm start) or give it a server`);
    process.exit(CONFIG_EXIT_CODE);
  }
  try {
    const service = await start(cfg, cfg.nats.url, log);
    onShutdown(log, () => service.close(), settings.launcherPid);
    announceReady(name, service.ready);
  } catch (err) {
    exitOnStartError(log, name, err);
  }
}
