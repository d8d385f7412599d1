import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { chmodSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { SEALED_HASH_PREFIX } from '../../proto/engine.js';
import { ConfigError, type Config } from '../config/config.js';

const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const aad = (username: string) => Buffer.from(`etf-credentials\0${username}`, 'utf8');

/**
 * The key that seals every team's bcrypt hash wherever it leaves the gateway
 * or the engine's memory: the register command, the engine's journal and
 * snapshots, the credentials reply (proto/engine.ts SEALED_HASH_PREFIX).
 * Only the gateway (which opens them to check passwords) and the engine
 * (which seals roster hashes and hashes journaled before sealing existed)
 * read this file; no NATS role can, so the operator's, which reads and
 * administers streams, sees ciphertext only (proto/roles.ts).
 *
 * AES-256-GCM with a random IV per seal, and the username as associated data:
 * a sealed hash opens only for the account it was sealed for.
 */
export class CredentialsKey {
  /** `file`: where the key was read from, for messages. */
  constructor(
    private readonly key: Buffer,
    readonly file = '',
  ) {
    if (key.length !== KEY_BYTES) throw new Error(`credentials key: expected ${KEY_BYTES} bytes`);
  }

  seal(hash: string, username: string): string {
    const iv = randomBytes(IV_BYTES);
    const c = createCipheriv('aes-256-gcm', this.key, iv);
    c.setAAD(aad(username));
    const body = Buffer.concat([c.update(hash, 'utf8'), c.final()]);
    return `${SEALED_HASH_PREFIX}${Buffer.concat([iv, c.getAuthTag(), body]).toString('base64url')}`;
  }

  /** The bcrypt hash; a hash stored before sealing existed as it is; null when it does not open with this key (another key, or tampered). */
  open(stored: string, username: string): string | null {
    if (!isSealed(stored)) return stored;
    const raw = Buffer.from(stored.slice(SEALED_HASH_PREFIX.length), 'base64url');
    if (raw.length <= IV_BYTES + TAG_BYTES) return null;
    try {
      const d = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, IV_BYTES));
      d.setAAD(aad(username));
      d.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      return Buffer.concat([d.update(raw.subarray(IV_BYTES + TAG_BYTES)), d.final()]).toString('utf8');
    } catch {
      // GCM's authentication failed: the only error decryption of a well-formed value throws.
      return null;
    }
  }
}

export const isSealed = (stored: string): boolean => stored.startsWith(SEALED_HASH_PREFIX);

/** CREDENTIALS_KEY_FILE, else <dataDir>/credentials.key. */
export const credentialsKeyFile = (cfg: Config): string => cfg.credentialsKeyFile || join(cfg.dataDir, 'credentials.key');

/**
 * Reads the key, or makes it (random, mode 0600) on the first start: written
 * whole to a file of its own, then linked into place, so a gateway and an
 * engine starting at once agree on the one that won and never read half of it.
 * Every gateway and engine of a system must read the same file (copy it
 * beside each when they run on several hosts).
 */
export function loadCredentialsKey(file: string): CredentialsKey {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, `${randomBytes(KEY_BYTES).toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  try {
    linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    rmSync(tmp, { force: true });
  }
  chmodSync(file, 0o600);
  const key = Buffer.from(readFileSync(file, 'utf8').trim(), 'base64');
  if (key.length !== KEY_BYTES) throw new ConfigError(`credentials key ${file}: expected ${KEY_BYTES} bytes in base64 (CREDENTIALS_KEY_FILE)`);
  return new CredentialsKey(key, file);
}
