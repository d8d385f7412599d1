import { MalformedMessage } from '../../proto/codec.js';
import type { Logger } from './log.js';

/**
 * Messages a process received and could not use, per kind: each kind is
 * logged the first time and counted always, so a flood of bad messages (any
 * process with the permission can publish them) is one line, not a flood of
 * lines, and the count still shows it.
 */
export class Unreadable {
  readonly counts: Record<string, number> = {};

  constructor(
    private readonly log: Logger | undefined,
    /** What the log line says was unusable, e.g. 'command batch from the bus'. */
    private readonly what: string,
  ) {}

  /** One unusable message of `kind`, with what is wrong with it. */
  note(kind: string, detail: Record<string, unknown>): void {
    const n = (this.counts[kind] = (this.counts[kind] ?? 0) + 1);
    if (n === 1) this.log?.warn({ kind, ...detail }, `unusable ${this.what} ignored (further ones of this kind are only counted)`);
  }

  /** What decodeAs (proto/codec.ts) threw: a message of the wrong shape is named by its kind, anything else did not decode. */
  caught(err: unknown, detail: Record<string, unknown> = {}): void {
    if (err instanceof MalformedMessage) this.note(err.what, { ...detail, problem: err.problem });
    else this.note('undecodable', { ...detail, err: err instanceof Error ? err.message : String(err) });
  }
}
