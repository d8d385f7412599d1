import { pino, type DestinationStream, type Logger } from 'pino';
import { prettyFactory } from 'pino-pretty';

const REDACT = {
  paths: ['password', '*.password', '*.*.password', 'passwordHash', '*.passwordHash', 'authorization', '*.authorization', 'headers.authorization'],
  censor: '[redacted]',
};

/**
 * `LOG_FORMAT=pretty|json` decides; unset, people at a terminal get pretty
 * lines and pipes (log collectors, the tests that read the engine's ready
 * line) get JSON.
 */
export function wantsPretty(env: NodeJS.ProcessEnv = process.env, isTTY = Boolean(process.stdout.isTTY)): boolean {
  const f = (env.LOG_FORMAT ?? '').toLowerCase();
  if (f === 'json') return false;
  if (f === 'pretty') return true;
  return isTTY;
}

/**
 * One line per event for a person: local time, level, service, message, then
 * the fields. Formatted in this thread and written straight to the terminal:
 * demo volumes are small, and a fatal line written just before process.exit
 * is never lost in a worker. (pino-pretty's own stream would re-add `err` to
 * the keys it prints as an indented block after pino's config message.)
 */
export function prettyDestination(out: { write(s: string): unknown; isTTY?: boolean } = process.stdout): DestinationStream {
  const format = prettyFactory({
    // Colours for a terminal; LOG_FORMAT=pretty into a file gets plain text. FORCE_COLOR=1: a pipe the launcher passes on to a terminal.
    colorize: out.isTTY === true || process.env.FORCE_COLOR === '1',
    singleLine: true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,name',
    messageFormat: '{name}: {msg}',
    // An error stays on its event's line (as JSON) instead of opening a multi-line block.
    errorLikeObjectKeys: [],
  });
  return { write: (line: string) => void out.write(format(line)) };
}

/**
 * Structured logs. Anything that may carry a secret is redacted by path, so a
 * password never reaches a log even when a whole request is logged by mistake.
 */
export function createLogger(name: string, level = process.env.LOG_LEVEL ?? 'info', destination?: DestinationStream): Logger {
  const opts = { name, level, redact: REDACT };
  const dest = destination ?? (wantsPretty() ? prettyDestination() : undefined);
  return dest ? pino(opts, dest) : pino(opts);
}

export type { Logger };
