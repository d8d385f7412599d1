import type { ThrottleConfig, ThrottleLimit } from '../config/config.js';
import type { ThrottleScope } from '../../proto/http.js';

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * Token buckets by key: `burst` tokens, refilled at `perMinute`. A key whose
 * bucket is full again carries no information and is dropped by the sweep,
 * so memory follows the keys active within the last refill period.
 */
export class Limiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly perMs: number;

  constructor(readonly limit: ThrottleLimit) {
    this.perMs = limit.perMinute / 60_000;
  }

  private bucket(key: string, now: number): Bucket {
    let b = this.buckets.get(key);
    if (!b) {
      b = { tokens: this.limit.burst, at: now };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.limit.burst, b.tokens + (now - b.at) * this.perMs);
      b.at = now;
    }
    return b;
  }

  /** Takes a token; null when taken, else the seconds until one is back (for Retry-After). */
  take(key: string, now = Date.now()): number | null {
    const b = this.bucket(key, now);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return null;
    }
    return this.wait(b);
  }

  /** Seconds until a token is back, without taking one; null when one is there. */
  check(key: string, now = Date.now()): number | null {
    const b = this.bucket(key, now);
    return b.tokens >= 1 ? null : this.wait(b);
  }

  /** Gives back a token taken for work that turned out not to count (a successful login). */
  refund(key: string): void {
    const b = this.buckets.get(key);
    if (b) b.tokens = Math.min(this.limit.burst, b.tokens + 1);
  }

  private wait(b: Bucket): number {
    return this.perMs > 0 ? Math.max(1, Math.ceil((1 - b.tokens) / this.perMs / 1000)) : 3600;
  }

  sweep(now = Date.now()): void {
    for (const [key, b] of this.buckets) {
      if (b.tokens + (now - b.at) * this.perMs >= this.limit.burst) this.buckets.delete(key);
    }
  }

  get size(): number {
    return this.buckets.size;
  }
}

export interface Refusal {
  scope: ThrottleScope;
  retryAfter: number;
}

/**
 * Every limit of the gateway. With throttling off, every check passes.
 * Failed logins are counted per username and per address; the tokens are
 * taken before bcrypt runs (and given back on success), so concurrent wrong
 * passwords cannot all slip past the check and make the service pay bcrypt.
 */
export class Throttle {
  readonly enabled: boolean;
  private readonly address: Limiter | null;
  private readonly team: Limiter | null;
  private readonly conversions: Limiter | null;
  private readonly registrations: Limiter | null;
  private readonly loginUser: Limiter | null;
  private readonly loginAddress: Limiter | null;
  private readonly sweeper: NodeJS.Timeout;

  constructor(cfg: ThrottleConfig | undefined) {
    this.enabled = cfg?.enabled ?? false;
    const make = (l: ThrottleLimit | undefined) => (this.enabled && l ? new Limiter(l) : null);
    this.address = make(cfg?.address);
    this.team = make(cfg?.team);
    this.conversions = make(cfg?.conversions);
    this.registrations = make(cfg?.registrations);
    this.loginUser = make(cfg?.loginFailuresPerUser);
    this.loginAddress = make(cfg?.loginFailuresPerAddress);
    this.sweeper = setInterval(() => this.all().forEach((l) => l.sweep()), 10_000);
    this.sweeper.unref();
  }

  private all(): Limiter[] {
    return [this.address, this.team, this.conversions, this.registrations, this.loginUser, this.loginAddress].filter((l): l is Limiter => l !== null);
  }

  private static taken(l: Limiter | null, key: string, scope: ThrottleScope): Refusal | null {
    const wait = l?.take(key) ?? null;
    return wait === null ? null : { scope, retryAfter: wait };
  }

  /** Every request of the API, by client address. */
  request(address: string): Refusal | null {
    return Throttle.taken(this.address, address, 'address');
  }

  /** Every authenticated request, by team. */
  teamRequest(clientId: number): Refusal | null {
    return Throttle.taken(this.team, String(clientId), 'team');
  }

  conversion(clientId: number): Refusal | null {
    return Throttle.taken(this.conversions, String(clientId), 'conversion');
  }

  registration(address: string): Refusal | null {
    return Throttle.taken(this.registrations, address, 'register');
  }

  /** An address locked out by its failed logins may not even try a cached password. */
  loginLocked(address: string): Refusal | null {
    const wait = this.loginAddress?.check(address) ?? null;
    return wait === null ? null : { scope: 'login_address', retryAfter: wait };
  }

  /**
   * Before a password check that needs bcrypt: takes a failure token from the
   * address and the username (a refusal still costs the address its token).
   * The caller gives them back with `loginSucceeded` when the password was right.
   */
  beginSlowLogin(address: string, username: string): Refusal | null {
    const byAddress = Throttle.taken(this.loginAddress, address, 'login_address');
    if (byAddress) return byAddress;
    return Throttle.taken(this.loginUser, username, 'login_user');
  }

  loginSucceeded(address: string, username: string): void {
    this.loginAddress?.refund(address);
    this.loginUser?.refund(username);
  }

  close(): void {
    clearInterval(this.sweeper);
  }
}
