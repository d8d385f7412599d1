import { pino, type Logger } from 'pino';

/**
 * Structured logs. Anything that may carry a secret is redacted by path, so a
 * password never reaches a log even when a whole request is logged by mistake.
 */
export function createLogger(name: string, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({
    name,
    level,
    redact: {
      paths: ['password', '*.password', '*.*.password', 'passwordHash', '*.passwordHash', 'authorization', '*.authorization', 'headers.authorization'],
      censor: '[redacted]',
    },
  });
}

export type { Logger };
