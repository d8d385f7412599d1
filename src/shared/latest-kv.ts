import type { KV } from '@nats-io/kv';
import type { Logger } from './log.js';
import { describeError } from './js-errors.js';

/**
 * KV writes of the latest value per key, at most one in flight per key: a
 * burst of changes to one key costs one write now and one with the last
 * value after it, not one JetStream round trip each. A failed write (a
 * stream leader moving, a server restarting) is retried with backoff until
 * it is stored or a newer value replaces it, so published state is never
 * left behind by a transient failure, and an older value never lands after
 * a newer one.
 */
export class LatestPerKey {
  private readonly dirty = new Map<string, Uint8Array>();
  private readonly busy = new Set<string>();
  private readonly failures = new Map<string, number>();
  private waiters: Array<() => void> = [];
  private closed = false;
  /** Writes stored, and failed attempts (each retried). */
  readonly stats = { stored: 0, failed: 0 };
  /** Per key whose writes fail, when its first failure since its last stored value was. */
  private readonly failingSince = new Map<string, number>();
  private lastError: { error: string; ts: number } | null = null;

  constructor(
    private readonly kv: KV,
    private readonly log: Logger,
    /** Called with each value once stored (e.g. to announce it on a subject after the bucket has it). */
    private readonly onStored?: (key: string, data: Uint8Array) => void,
  ) {}

  put(key: string, data: Uint8Array): void {
    if (this.closed) return;
    this.dirty.set(key, data);
    if (!this.busy.has(key)) this.write(key);
  }

  /** Resolves once every value put so far is stored (or replaced by a stored newer one). */
  flushed(): Promise<void> {
    return this.busy.size === 0 ? Promise.resolve() : new Promise((r) => this.waiters.push(r));
  }

  /**
   * While some key's writes fail and none has been stored since: the first of
   * those failures and what the bucket last said. Retries hide a failure that
   * lasts: this is how its owner can tell.
   */
  failing(): { since: number; error: string } | null {
    if (this.failingSince.size === 0 || !this.lastError) return null;
    return { since: Math.min(...this.failingSince.values()), error: this.lastError.error };
  }

  /** The newest failed write, kept after writes succeed again. */
  lastFailure(): { error: string; ts: number } | null {
    return this.lastError;
  }

  private write(key: string): void {
    const data = this.dirty.get(key);
    if (!data) {
      this.busy.delete(key);
      if (this.busy.size === 0) for (const w of this.waiters.splice(0)) w();
      return;
    }
    this.dirty.delete(key);
    this.busy.add(key);
    this.kv.put(key, data).then(
      () => {
        this.failures.delete(key);
        this.failingSince.delete(key);
        this.stats.stored++;
        if (!this.closed) this.onStored?.(key, data);
        this.write(key);
      },
      (err: unknown) => {
        if (this.closed) return this.write(key);
        this.stats.failed++;
        if (!this.failingSince.has(key)) this.failingSince.set(key, Date.now());
        this.lastError = { error: describeError(err), ts: Date.now() };
        const n = (this.failures.get(key) ?? 0) + 1;
        this.failures.set(key, n);
        if (n === 1 || n % 20 === 0) this.log.warn({ key, attempt: n, err: String(err) }, 'kv put failed: retrying');
        if (!this.dirty.has(key)) this.dirty.set(key, data);
        const pause = Math.min(2000, 50 * 2 ** Math.min(n, 6));
        setTimeout(() => this.write(key), pause / 2 + Math.random() * (pause / 2)).unref();
      },
    );
  }

  /** Drops what is not written yet. */
  close(): void {
    this.closed = true;
    this.dirty.clear();
  }
}
