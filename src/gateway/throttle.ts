import { isIPv4, isIPv6 } from 'node:net';
import type { ThrottleConfig, ThrottleLimit } from '../config/config.js';
import type { ThrottleScope } from '../../proto/http.js';
import type { HttpCall } from './http.js';

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

/** IPv6 text (any of its forms, IPv4 tail included) as its 8 16-bit words; null when it is not IPv6. */
function ipv6Words(a: string): number[] | null {
  if (!isIPv6(a)) return null;
  let text = a;
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (tail) {
    const [b0, b1, b2, b3] = tail[1]!.split('.').map(Number) as [number, number, number, number];
    text = `${text.slice(0, -tail[1]!.length)}${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const [left, right] = text.split('::') as [string, string | undefined];
  const words = (part: string | undefined) => (part ? part.split(':').map((w) => parseInt(w, 16)) : []);
  const l = words(left);
  if (right === undefined) return l;
  const r = words(right);
  return [...l, ...Array<number>(8 - l.length - r.length).fill(0), ...r];
}

/** How client addresses are grouped into the hosts per-address limits count. */
export interface HostGrouping {
  /** 'one' (default): every loopback address (127.0.0.0/8, ::1) is one host; 'each': each its own (tests, benches). */
  loopback: 'one' | 'each';
  /** Leading bits of an IPv6 address that name a host (default 64: a /64 is what one subscriber gets). */
  ipv6Prefix: number;
}

export const DEFAULT_HOSTS: HostGrouping = { loopback: 'one', ipv6Prefix: 64 };

/**
 * The host an address counts as. Any user of a machine can bind every 127.x
 * address, and any IPv6 subscriber holds a whole /64 (2^64 addresses): counted
 * one by one, per-address limits would be no limits at all. An IPv4-mapped
 * IPv6 address (::ffff:a.b.c.d, what a dual-stack socket reports) is that IPv4
 * address. Anything else (an empty address, a unix socket) is its own key.
 */
export function hostKey(address: string, hosts: HostGrouping = DEFAULT_HOSTS): string {
  const a = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const v4 = (ip: string) => (hosts.loopback === 'one' && ip.startsWith('127.') ? 'loopback' : ip);
  if (isIPv4(a)) return v4(a);
  const w = ipv6Words(a);
  if (!w || w.length !== 8) return address;
  if (w.slice(0, 5).every((x) => x === 0) && w[5] === 0xffff) return v4(`${w[6]! >> 8}.${w[6]! & 255}.${w[7]! >> 8}.${w[7]! & 255}`);
  if (w.slice(0, 7).every((x) => x === 0) && w[7] === 1) return hosts.loopback === 'one' ? 'loopback' : '::1';
  // The prefix's bits, the rest zeroed: 2001:db8:1:2::/64.
  const bits = Math.max(0, Math.min(128, hosts.ipv6Prefix));
  const kept = w.map((x, i) => {
    const from = i * 16;
    if (bits >= from + 16) return x;
    if (bits <= from) return 0;
    return x & (0xffff << (16 - (bits - from)));
  });
  return `${kept.map((x) => x.toString(16)).join(':')}/${bits}`;
}

export interface Refusal {
  scope: ThrottleScope;
  retryAfter: number;
}

/** 429 with Retry-After (whole seconds) and which limit it was. */
export function tooMany(ex: HttpCall, r: Refusal): void {
  ex.error('too_many_requests', `too many requests (${r.scope}): retry after ${r.retryAfter} s`, { scope: r.scope, retry_after: r.retryAfter }, { 'retry-after': String(r.retryAfter) });
}

/** How long a (username, host) that proved its password stays proven (renewed by each success). */
export const PROVEN_LOGIN_MS = 12 * 3600_000;
/** Addresses whose host is remembered at most (then forgotten all at once: recomputing is cheap). */
const HOSTS_REMEMBERED = 10_000;
/** Proven pairs kept at most (the oldest go first): only right passwords make them, so this bounds a busy day, not an attack. */
const PROVEN_MAX = 100_000;

/**
 * Every limit of the gateway. With throttling off, every check passes.
 *
 * Failed logins are counted per host and per username; the tokens are taken
 * before the password check runs (bcrypt for teams), and given back on
 * success, so concurrent wrong passwords cannot all slip past the check.
 *
 * A username under attack must not lock its owner out: a (username, host)
 * that proved the password in the last PROVEN_LOGIN_MS has a failure bucket of
 * its own instead of the username's (which the attackers drain). A wrong
 * password from a proven host still counts, in that bucket and its host's.
 */
export class Throttle {
  readonly enabled: boolean;
  private readonly hosts: HostGrouping;
  private readonly provenMs: number;
  private readonly address: Limiter | null;
  private readonly team: Limiter | null;
  private readonly conversions: Limiter | null;
  private readonly registrations: Limiter | null;
  private readonly loginUser: Limiter | null;
  private readonly loginPair: Limiter | null;
  private readonly loginAddress: Limiter | null;
  /** `username\0host` -> proven until (ms); a Map keeps insertion order, so the oldest come first. */
  private readonly proven = new Map<string, number>();
  private readonly hostOf = new Map<string, string>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(cfg: ThrottleConfig | undefined) {
    this.enabled = cfg?.enabled ?? false;
    this.hosts = { loopback: cfg?.loopback ?? DEFAULT_HOSTS.loopback, ipv6Prefix: cfg?.ipv6Prefix ?? DEFAULT_HOSTS.ipv6Prefix };
    this.provenMs = cfg?.provenLoginMs ?? PROVEN_LOGIN_MS;
    const make = (l: ThrottleLimit | undefined) => (this.enabled && l ? new Limiter(l) : null);
    this.address = make(cfg?.address);
    this.team = make(cfg?.team);
    this.conversions = make(cfg?.conversions);
    this.registrations = make(cfg?.registrations);
    this.loginUser = make(cfg?.loginFailuresPerUser);
    this.loginPair = make(cfg?.loginFailuresPerUser);
    this.loginAddress = make(cfg?.loginFailuresPerAddress);
    this.sweeper = setInterval(() => this.sweep(), 10_000);
    this.sweeper.unref();
  }

  private sweep(now = Date.now()): void {
    this.all().forEach((l) => l.sweep(now));
    for (const [k, until] of this.proven) if (until <= now) this.proven.delete(k);
  }

  private all(): Limiter[] {
    return [this.address, this.team, this.conversions, this.registrations, this.loginUser, this.loginPair, this.loginAddress].filter((l): l is Limiter => l !== null);
  }

  private static taken(l: Limiter | null, key: string, scope: ThrottleScope): Refusal | null {
    const wait = l?.take(key) ?? null;
    return wait === null ? null : { scope, retryAfter: wait };
  }

  /** The host `address` counts as (hostKey with this throttle's grouping), remembered: it is asked several times a request. */
  host(address: string): string {
    let key = this.hostOf.get(address);
    if (key === undefined) {
      if (this.hostOf.size >= HOSTS_REMEMBERED) this.hostOf.clear();
      key = hostKey(address, this.hosts);
      this.hostOf.set(address, key);
    }
    return key;
  }

  /** Every request of the API, by client host. */
  request(address: string): Refusal | null {
    return Throttle.taken(this.address, this.host(address), 'address');
  }

  /** Every authenticated request, by team. */
  teamRequest(clientId: number): Refusal | null {
    return Throttle.taken(this.team, String(clientId), 'team');
  }

  conversion(clientId: number): Refusal | null {
    return Throttle.taken(this.conversions, String(clientId), 'conversion');
  }

  registration(address: string): Refusal | null {
    return Throttle.taken(this.registrations, this.host(address), 'register');
  }

  /** A host locked out by its failed logins may not even try a cached password. */
  loginLocked(address: string): Refusal | null {
    const wait = this.loginAddress?.check(this.host(address)) ?? null;
    return wait === null ? null : { scope: 'login_address', retryAfter: wait };
  }

  private pair(address: string, username: string): string {
    return `${username}\0${this.host(address)}`;
  }

  private isProven(pair: string, now = Date.now()): boolean {
    const until = this.proven.get(pair);
    return until !== undefined && until > now;
  }

  /**
   * Before a password check that costs (bcrypt): takes a failure token from the
   * host, then from the username, or from the (username, host) pair when that
   * pair has proven the password (a refusal still costs the host its token).
   * The caller gives them back with `loginSucceeded` when the password was right.
   */
  beginSlowLogin(address: string, username: string): Refusal | null {
    const byAddress = Throttle.taken(this.loginAddress, this.host(address), 'login_address');
    if (byAddress) return byAddress;
    const pair = this.pair(address, username);
    if (this.isProven(pair)) return Throttle.taken(this.loginPair, pair, 'login_user');
    return Throttle.taken(this.loginUser, username, 'login_user');
  }

  /** After a right password that went through beginSlowLogin: the tokens back, and the pair proven. */
  loginSucceeded(address: string, username: string): void {
    this.loginAddress?.refund(this.host(address));
    const pair = this.pair(address, username);
    if (this.isProven(pair)) this.loginPair?.refund(pair);
    else this.loginUser?.refund(username);
    this.loginPassed(address, username);
  }

  /** Any right password (a cached one too): the pair is proven for another PROVEN_LOGIN_MS. */
  loginPassed(address: string, username: string): void {
    if (!this.enabled) return;
    const pair = this.pair(address, username);
    const now = Date.now();
    // Renewed at most once per half period: every authenticated request passes here.
    if ((this.proven.get(pair) ?? 0) - now > this.provenMs / 2) return;
    this.proven.delete(pair);
    this.proven.set(pair, now + this.provenMs);
    if (this.proven.size > PROVEN_MAX) this.proven.delete(this.proven.keys().next().value!);
  }

  close(): void {
    clearInterval(this.sweeper);
  }
}
