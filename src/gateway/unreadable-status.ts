import { MalformedMessage } from '../../proto/codec.js';
import type { Logger } from '../shared/log.js';

/**
 * Statuses a service publishes that this gateway cannot read (another
 * version of it?): counted, the first and then every 1000th logged, the
 * newest kept, so /health says the status does not read rather than that the
 * service is down.
 */
export class UnreadableStatuses {
  count = 0;
  private newest: { problem: string; at: number } | null = null;

  constructor(
    private readonly what: string,
    private readonly log?: Logger,
  ) {}

  note(err: unknown): void {
    this.count++;
    this.newest = { problem: err instanceof MalformedMessage ? err.problem : String(err), at: Date.now() };
    if (this.count % 1000 === 1) this.log?.warn({ problem: this.newest.problem, count: this.count }, `a ${this.what} status that does not read: ignored (another version?)`);
  }

  /** Why the newest one did not read, while it is younger than `withinMs`; else null. */
  recent(withinMs: number): string | null {
    return this.newest && Date.now() - this.newest.at < withinMs ? this.newest.problem : null;
  }
}
