import { hash, randomBytes, timingSafeEqual } from 'node:crypto';
import bcrypt from 'bcrypt';
import type { Config } from '../config/config.js';
import { credentialsKeyFile, loadCredentialsKey, type CredentialsKey } from '../shared/credentials-key.js';
import type { EngineClient } from '../shared/engine-client.js';
import { PASSWORD_MAX_BYTES, USERNAME_PATTERN } from '../../proto/http.js';
import type { Refusal } from './throttle.js';

/**
 * How long a cached bcrypt hash is trusted before the engine is asked again:
 * the bound when the engine's word of a changed roster password is missed
 * (src/gateway/signin-changes.ts expires it at once otherwise).
 */
export const CREDENTIALS_TTL_MS = 30_000;

export interface AuthOptions {
  /** CREDENTIALS_TTL_MS unless set (config credentialsCacheMs). */
  cacheMs?: number;
  /** Opens the sealed hashes the engine keeps, seals new ones (proto/engine.ts SEALED_HASH_PREFIX). */
  key?: CredentialsKey;
}

/** The Authenticator's options from the config: its cache time and the system's credentials key. */
export const authOptions = (cfg: Config): AuthOptions => ({ cacheMs: cfg.credentialsCacheMs ?? CREDENTIALS_TTL_MS, key: loadCredentialsKey(credentialsKeyFile(cfg)) });

/** The sign-in could not be checked: the request went no further, whatever it asked (not the conversion's "may have happened"). */
const SIGN_IN_UNAVAILABLE = 'the engine did not answer the sign-in check (restarting or busy): nothing was done; retry shortly';
const KEY_MISMATCH = "a stored password hash does not open with this gateway's credentials key: every gateway and engine must read the same CREDENTIALS_KEY_FILE";

interface Entry {
  clientId: number;
  hash: string;
  fetchedAt: number;
  /** Keyed digest (proofOf) of the last password bcrypt accepted for `hash`. */
  proof?: Buffer;
}

export type AuthResult = { ok: true; clientId: number } | { ok: false; unavailable?: string; throttled?: Refusal };

/** What the caller's throttle says before a password check that needs bcrypt, and is told after a success. */
export interface LoginGate {
  beforeSlow(username: string): Refusal | null;
  succeeded(username: string): void;
}

/**
 * Verifies passwords without paying bcrypt (~57 ms) on every request. The
 * first success for an account stores a keyed digest of the password under a key
 * that exists only in this process's memory; later requests compare digests in
 * constant time. The proof is tied to the bcrypt hash it was checked against:
 * when the engine reports a different hash, the proof is dropped. Unknown
 * usernames are never cached, so they cannot grow memory.
 */
export class Authenticator {
  /** The proof key, as the hex text a proof's input starts with (64 characters: a fixed-length prefix). */
  private readonly key = randomBytes(32).toString('hex');
  private readonly cache = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<AuthResult>>();
  private readonly refreshing = new Map<string, Promise<AuthResult | null>>();
  /**
   * An unknown username is checked against this hash of a random password,
   * so a wrong password costs one bcrypt whether or not the account exists:
   * no telling usernames apart by the time of a failure.
   */
  private readonly dummyHash: string;
  /** bcrypt comparisons run (tests check that known and unknown usernames cost the same). */
  bcryptRuns = 0;
  private readonly ttl: number;
  private readonly sealKey: CredentialsKey | undefined;
  /**
   * +1 at each expire: an engine answer asked for before it (the old hash,
   * crossing the news on the bus) is kept as already stale, so the next
   * request asks again instead of trusting it for the whole cache time.
   */
  private epoch = 0;

  constructor(
    private readonly engine: EngineClient,
    bcryptRounds = 10,
    opts: AuthOptions = {},
  ) {
    this.dummyHash = bcrypt.hashSync(randomBytes(18).toString('base64'), bcryptRounds);
    this.ttl = opts.cacheMs ?? CREDENTIALS_TTL_MS;
    this.sealKey = opts.key;
  }

  /**
   * The engine said these accounts' sign-in changed (a roster password, a line
   * taken out or put back: proto/engine.ts SignInChanges); with no names,
   * every account (NATS reconnected: such news may have been missed). Their
   * next request asks the engine again; a password unchanged for its hash
   * passes without bcrypt, as after the cache time.
   */
  expire(usernames?: readonly string[]): void {
    this.epoch++;
    const entries = usernames ? usernames.map((u) => this.cache.get(u)) : [...this.cache.values()];
    for (const e of entries) if (e) e.fetchedAt = -Infinity;
  }

  /** When an engine answer asked for at `epoch` counts as fetched: now, or never when an expire came meanwhile. */
  private fetchedSince(epoch: number): number {
    return epoch === this.epoch ? Date.now() : -Infinity;
  }

  /** A new account's bcrypt hash as the engine keeps it: sealed for `username`. */
  seal(hash: string, username: string): string {
    if (!this.sealKey) throw new Error('no credentials key: the gateway cannot register accounts');
    return this.sealKey.seal(hash, username);
  }

  /** The bcrypt hash in what the engine keeps (sealed, or plain from an older journal); null when it does not open. */
  private opened(stored: string, username: string): string | null {
    if (stored === '') return '';
    return this.sealKey ? this.sealKey.open(stored, username) : stored.startsWith('$2') ? stored : null;
  }

  /**
   * SHA-256 of the secret key followed by the password: a keyed digest that
   * only this process ever sees and only ever compares, so the length
   * extension an HMAC guards against gives an attacker nothing. One-shot
   * `crypto.hash` costs a third of an HMAC object per request.
   */
  private proofOf(password: string): Buffer {
    return hash('sha256', this.key + password, 'buffer');
  }

  /**
   * A password that matches the cached proof passes at once; any other needs
   * bcrypt, and `gate` (the throttle) is asked first. Wrong passwords are not
   * remembered: a known user's repeated failure must cost what an unknown user's does.
   */
  verify(username: string, password: string, gate?: LoginGate): Promise<AuthResult> | AuthResult {
    // Refused here for every way in (HTTP, the WebSocket's login and upgrade): bcrypt reads only the first 72 bytes,
    // so the right password plus any suffix would pass, each suffix a cache miss and a bcrypt run the throttle gives
    // back on success. Registration refuses such passwords, so none can be right.
    if (Buffer.byteLength(password) > PASSWORD_MAX_BYTES) return { ok: false };
    // No account has a username outside the pattern (registration and the roster both refuse them): failed here, not
    // sent to the engine, whose command batches a flood of 16 KB names would otherwise fill.
    if (!USERNAME_PATTERN.test(username)) return { ok: false };
    const proof = this.proofOf(password);
    const entry = this.cache.get(username);
    if (entry?.proof && timingSafeEqual(entry.proof, proof)) {
      if (Date.now() - entry.fetchedAt < this.ttl) return { ok: true, clientId: entry.clientId };
      // The password this gateway last saw accepted, cached too long: the engine is asked
      // whether the hash is still the same, and no failure bucket is touched (nothing is
      // being guessed). Else (a changed hash) it is checked like any password.
      // Concurrent requests of the team share one engine read.
      const key = `${username}\0${proof.toString('base64')}`;
      let p = this.refreshing.get(key);
      if (!p) {
        p = this.refresh(username, proof).finally(() => this.refreshing.delete(key));
        this.refreshing.set(key, p);
      }
      return p.then((r) => r ?? this.gated(username, password, proof, gate));
    }
    return this.gated(username, password, proof, gate);
  }

  /** The cached proof checked against the engine's current hash: a result when the engine settles it, null when bcrypt must. */
  private async refresh(username: string, proof: Buffer): Promise<AuthResult | null> {
    const epoch = this.epoch;
    const reply = await this.engine.call({ op: 'credentials', username });
    if (!reply.ok) {
      if (reply.error.code === 'engine_unavailable') return { ok: false, unavailable: SIGN_IN_UNAVAILABLE };
      this.cache.delete(username);
      return null;
    }
    const hash = this.opened(reply.result.passwordHash, username);
    if (hash === null) return { ok: false, unavailable: KEY_MISMATCH };
    const entry = this.cache.get(username);
    if (entry && entry.hash === hash && entry.clientId === reply.result.client_id && entry.proof && timingSafeEqual(entry.proof, proof)) {
      entry.fetchedAt = this.fetchedSince(epoch);
      return { ok: true, clientId: entry.clientId };
    }
    this.cache.set(username, { clientId: reply.result.client_id, hash, fetchedAt: this.fetchedSince(epoch) });
    return null;
  }

  private gated(username: string, password: string, proof: Buffer, gate?: LoginGate): Promise<AuthResult> | AuthResult {
    const refused = gate?.beforeSlow(username);
    if (refused) return { ok: false, throttled: refused };
    // Concurrent first requests with the same credentials share one bcrypt.
    const key = `${username}\0${proof.toString('base64')}`;
    let p = this.inflight.get(key);
    if (!p) {
      p = this.slowVerify(username, password, proof).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    if (!gate) return p;
    return p.then((r) => {
      if (r.ok) gate.succeeded(username);
      return r;
    });
  }

  private async compare(password: string, hash: string): Promise<boolean> {
    this.bcryptRuns++;
    return bcrypt.compare(password, hash);
  }

  private async slowVerify(username: string, password: string, proof: Buffer): Promise<AuthResult> {
    let entry = this.cache.get(username);
    if (!entry || Date.now() - entry.fetchedAt >= this.ttl) {
      const epoch = this.epoch;
      const reply = await this.engine.call({ op: 'credentials', username });
      if (!reply.ok) {
        this.cache.delete(username);
        if (reply.error.code === 'engine_unavailable') return { ok: false, unavailable: SIGN_IN_UNAVAILABLE };
        await this.compare(password, this.dummyHash);
        return { ok: false };
      }
      const creds = reply.result;
      const hash = this.opened(creds.passwordHash, username);
      if (hash === null) return { ok: false, unavailable: KEY_MISMATCH };
      const fresh = this.cache.get(username);
      if (fresh && fresh.hash === hash && fresh.clientId === creds.client_id) {
        fresh.fetchedAt = this.fetchedSince(epoch);
        entry = fresh;
      } else {
        entry = { clientId: creds.client_id, hash, fetchedAt: this.fetchedSince(epoch) };
        this.cache.set(username, entry);
      }
      if (entry.proof && timingSafeEqual(entry.proof, proof)) return { ok: true, clientId: entry.clientId };
    }
    const ok = await this.compare(password, entry.hash !== '' ? entry.hash : this.dummyHash) && entry.hash !== '';
    if (ok) {
      entry.proof = proof;
      return { ok: true, clientId: entry.clientId };
    }
    return { ok: false };
  }
}
