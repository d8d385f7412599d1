import { CONFIG_EXIT_CODE, NeedsOperator, loadConfig, type Config } from '../config/config.js';
import { createLogger, type Logger } from './log.js';

/** Set by the launcher in each service's environment: its pid. */
export const LAUNCHER_PID_VAR = 'ETF_LAUNCHER_PID';

/**
 * Runs `close` once on SIGINT/SIGTERM, then exits; a second signal exits at
 * once. A service the launcher started (in its own process group) also stops
 * when the launcher is gone, killed without the chance to stop it: no orphan
 * keeps serving.
 */
export function onShutdown(log: Logger, close: () => Promise<void>): void {
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
  const launcher = Number(process.env[LAUNCHER_PID_VAR]);
  if (launcher > 0) {
    // Reparented (to init or a subreaper) once the launcher is gone; Linux has no portable death signal for Node.
    const watch = setInterval(() => {
      if (process.ppid === launcher || closing) return;
      clearInterval(watch);
      handler('launcher gone');
    }, 500);
    watch.unref();
  }
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
 * The entry point of a NATS service (engine, gateway, pricing): config, a
 * logger, NATS_URL required, start, clean stop on SIGINT/SIGTERM, and a clear
 * fatal log and exit code when start-up fails.
 */
export async function runService(
  name: string,
  start: (cfg: Config, natsUrl: string, log: Logger) => Promise<{ close(): Promise<void> }>,
): Promise<void> {
  let cfg: Config;
  try {
    cfg = loadConfig();
  } catch (err) {
    exitOnStartError(createLogger(name, process.env.LOG_LEVEL ?? 'info'), name, err);
  }
  const log = createLogger(name, cfg.logLevel);
  if (!cfg.nats.url) {
    log.fatal(`NATS_URL is not set: run the ${name} through the launcher (npm start) or give it a server`);
    process.exit(CONFIG_EXIT_CODE);
  }
  try {
    const service = await start(cfg, cfg.nats.url, log);
    onShutdown(log, () => service.close());
  } catch (err) {
    exitOnStartError(log, name, err);
  }
}
