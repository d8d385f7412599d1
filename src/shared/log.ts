import { pino, type DestinationStream, type Logger } from 'pino';
import { prettyFactory } from 'pino-pretty';
import type { ProcessSettings } from '../config/process.js';

const REDACT = {
  paths: ['password', '*.password', '*.*.password', 'passwordHash', '*.passwordHash', 'authorization', '*.authorization', 'headers.authorization'],
  censor: '[redacted]',
};

/**
 * One line per event for a person: local time, level, service, message, then
 * the fields. Formatted in this thread and written straight to the terminal:
 * demo volumes are small, and a fatal line written just before process.exit
 * is never lost in a worker. (pino-pretty's own stream would re-add `err` to
 * the keys it prints as an indented block after pino's config message.)
 */
export function prettyDestination(out: { write(s: string): unknown; isTTY?: boolean } = process.stdout, colorize = out.isTTY === true): DestinationStream {
  const format = prettyFactory({
    // Colours for a terminal (or a pipe the launcher passes on to one); LOG_FORMAT=pretty into a file gets plain text.
    colorize,
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
 * Structured logs, JSON on stdout unless `destination` says otherwise. Anything
 * that may carry a secret is redacted by path, so a password never reaches a
 * log even when a whole request is logged by mistake.
 */
export function createLogger(name: string, level = 'info', destination?: DestinationStream): Logger {
  const opts = { name, level, redact: REDACT };
  return destination ? pino(opts, destination) : pino(opts);
}

/** A process's logger: its format from its settings (src/config/process.ts), its level the config's once read. */
export function processLogger(name: string, settings: ProcessSettings, level = settings.logLevel): Logger {
  return createLogger(name, level, settings.pretty ? prettyDestination(process.stdout, settings.color) : undefined);
}

export type { Logger };
