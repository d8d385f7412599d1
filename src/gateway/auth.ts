import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import bcrypt from 'bcrypt';
import type { CredentialsResult } from '../../proto/engine.js';
import type { EngineClient } from './engine-client.js';

/** How long a cached bcrypt hash is trusted before the engine is asked again (a roster password may change at an engine restart). */
const CREDENTIALS_TTL_MS = 30_000;
/** Wrong passwords remembered per account, so a client retrying a bad password does not cost a bcrypt each time. */
const MAX_REMEMBERED_FAILURES = 8;

interface Entry {
  clientId: number;
  hash: string;
  fetchedAt: number;
  /** HMAC of the last password bcrypt accepted for `hash`. */
  proof?: Buffer;
  failures: Buffer[];
}

export type AuthResult = { ok: true; clientId: number } | { ok: false; unavailable?: string };

/**
 * Verifies passwords without paying bcrypt (~57 ms) on every request. The
 * first success for an account stores an HMAC of the password under a key
 * that exists only in this process's memory; later requests compare HMACs in
 * constant time. The proof is tied to the bcrypt hash it was checked against:
 * when the engine reports a different hash, the proof is dropped. Unknown
 * usernames are never cached, so they cannot grow memory.
 */
export class Authenticator {
  private readonly key = randomBytes(32);
  private readonly cache = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<AuthResult>>();

  constructor(private readonly engine: EngineClient) {}

  private proofOf(password: string): Buffer {
    return createHmac('sha256', this.key).update(password).digest();
  }

  verify(username: string, password: string): Promise<AuthResult> | AuthResult {
    const proof = this.proofOf(password);
    const entry = this.cache.get(username);
    if (entry && Date.now() - entry.fetchedAt < CREDENTIALS_TTL_MS) {
      if (entry.proof && timingSafeEqual(entry.proof, proof)) return { ok: true, clientId: entry.clientId };
      if (entry.failures.some((f) => timingSafeEqual(f, proof))) return { ok: false };
    }
    // Concurrent first requests with the same credentials share one bcrypt.
    const key = `${username}\0${proof.toString('base64')}`;
    let p = this.inflight.get(key);
    if (!p) {
      p = this.slowVerify(username, password, proof).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  private async slowVerify(username: string, password: string, proof: Buffer): Promise<AuthResult> {
    let entry = this.cache.get(username);
    if (!entry || Date.now() - entry.fetchedAt >= CREDENTIALS_TTL_MS) {
      const reply = await this.engine.call({ op: 'credentials', username });
      if (!reply.ok) {
        this.cache.delete(username);
        return reply.error.code === 'engine_unavailable' ? { ok: false, unavailable: reply.error.message } : { ok: false };
      }
      const creds = reply.result as CredentialsResult;
      const fresh = this.cache.get(username);
      if (fresh && fresh.hash === creds.passwordHash && fresh.clientId === creds.client_id) {
        fresh.fetchedAt = Date.now();
        entry = fresh;
      } else {
        entry = { clientId: creds.client_id, hash: creds.passwordHash, fetchedAt: Date.now(), failures: [] };
        this.cache.set(username, entry);
      }
      if (entry.proof && timingSafeEqual(entry.proof, proof)) return { ok: true, clientId: entry.clientId };
    }
    const ok = entry.hash !== '' && (await bcrypt.compare(password, entry.hash));
    if (ok) {
      entry.proof = proof;
      return { ok: true, clientId: entry.clientId };
    }
    entry.failures.push(proof);
    if (entry.failures.length > MAX_REMEMBERED_FAILURES) entry.failures.shift();
    return { ok: false };
  }
}
