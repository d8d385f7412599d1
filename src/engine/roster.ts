import bcrypt from 'bcrypt';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { JournalEvent } from '../../proto/journal.js';
import type { RosterAccount, RosterRefusal } from '../config/accounts.js';
import { unclaimedFills, type EngineState } from './state.js';
import { shardOfClient, shardOfUsername } from '../../proto/shards.js';
import type { NameHolder } from '../../proto/engine.js';
import { ConfigError } from '../config/config.js';
import { isSealed, type CredentialsKey } from '../shared/credentials-key.js';
import type { Logger } from '../shared/log.js';

/**
 * The roster lines an engine shard owns (proto/shards.ts), and every roster
 * username, which no shard may let anyone register. With several shards a
 * line must name its client_id: ids handed out in file order would differ
 * with each shard's history.
 */
export function rosterForShard(roster: RosterAccount[], shard: number, shards: number): { own: RosterAccount[]; usernames: Set<string>; refused: RosterRefusal[] } {
  const usernames = new Set(roster.map((r) => r.username));
  if (shards === 1) return { own: roster, usernames, refused: [] };
  const refused: RosterRefusal[] = [];
  const own = roster.filter((r) => {
    if (r.clientId === undefined) return void refused.push({ line: r.line, reason: `with ${shards} engine shards every line needs its client_id` });
    return shardOfClient(r.clientId, shards) === shard;
  });
  return { own, usernames, refused };
}

/**
 * Reconciles the roster file with the journaled state. Returns the events for
 * roster accounts seen for the first time (journaled so their client_id and
 * opening holdings are fixed forever, with the fills the exchange made for
 * that client_id before: `claimed`), and the lines refused for conflicting
 * with history (a username `/register` took, a client_id another account
 * has): each is as if absent, the others are taken.
 */
export function rosterEvents(state: EngineState, roster: RosterAccount[], now: number): { events: JournalEvent[]; refused: RosterRefusal[] } {
  const events: JournalEvent[] = [];
  const refused: RosterRefusal[] = [];
  let maxId = state.maxClientId;
  for (const r of roster) maxId = Math.max(maxId, r.clientId ?? 0);
  for (const r of roster) {
    const conflict = rosterConflict(state, r);
    if (conflict) {
      refused.push({ line: r.line, reason: conflict });
      continue;
    }
    if (state.byUsername.has(r.username)) continue;
    const clientId = r.clientId ?? ++maxId;
    // Only a line naming its client_id is the exchange's account: an id handed out here may be a market maker's.
    const claimed = r.clientId !== undefined ? unclaimedFills(state, clientId) : undefined;
    events.push({
      t: 'account',
      clientId,
      username: r.username,
      source: 'roster',
      ...(r.opening.length > 0 ? { opening: r.opening } : {}),
      ...(claimed ? { claimed } : {}),
      ts: now,
    });
  }
  return { events, refused };
}

/** Why a roster line conflicts with history, or null. */
export function rosterConflict(state: EngineState, r: RosterAccount): string | null {
  const known = state.byUsername.get(r.username);
  if (known) return nameConflict(r, { username: r.username, client_id: known.clientId, source: known.source });
  // Reserved here for another shard's account (a line that named another client_id before).
  const named = state.names.get(r.username);
  if (named !== undefined) return nameConflict(r, { username: r.username, client_id: named, source: 'roster' });
  const holder = r.clientId !== undefined ? state.accounts.get(r.clientId) : undefined;
  return holder ? `client_id ${r.clientId} already belongs to ${holder.username}` : null;
}

/** Why a roster line conflicts with the account that holds its username, or null: the same words whichever shard holds it. */
function nameConflict(r: RosterAccount, holder: NameHolder): string | null {
  if (holder.source !== 'roster') return `username ${r.username} was already registered through /register as client_id ${holder.client_id}`;
  if (r.clientId !== undefined && r.clientId !== holder.client_id) return `username ${r.username} is client_id ${holder.client_id} in the journal, not ${r.clientId}`;
  return null;
}

/** A line of this shard whose username another shard decides (proto/shards.ts): its account opens only once that shard gives the name. */
export const nameDecidedElsewhere = (r: RosterAccount, shard: number, shards: number): boolean => shards > 1 && shardOfUsername(r.username, shards) !== shard;

/**
 * The lines whose username another shard decides, judged by its answers
 * (name-claims.ts; `held` by username): a line whose name is another
 * account's there is refused as it would be were that account here; one
 * whose shard did not answer is refused for now unless its account is open
 * already (`unanswered`: ask again).
 */
export function nameRefusals(state: EngineState, lines: RosterAccount[], held: ReadonlyMap<string, NameHolder>, shards: number): { refused: RosterRefusal[]; unanswered: RosterAccount[] } {
  const refused: RosterRefusal[] = [];
  const unanswered: RosterAccount[] = [];
  for (const r of lines) {
    const holder = held.get(r.username);
    if (holder) {
      const conflict = nameConflict(r, holder);
      if (conflict) refused.push({ line: r.line, reason: conflict });
      continue;
    }
    unanswered.push(r);
    if (!state.byUsername.has(r.username)) {
      const decider = shardOfUsername(r.username, shards);
      refused.push({ line: r.line, reason: `username ${r.username} waits for engine shard ${decider}, which decides that name, to confirm no /register took it first: taken once it answers` });
    }
  }
  return { refused, unanswered };
}

/**
 * The lines taken from a reading: all but the refused, each as if absent (a
 * running engine and a restarted one agree). The refusals are kept for
 * /health and logged once per reading, by line and reason (no reason quotes a
 * password field).
 */
export function takeRoster(state: EngineState, lines: RosterAccount[], refused: RosterRefusal[], origin: string, log: Logger): RosterAccount[] {
  state.rosterRefused = [...refused].sort((a, b) => a.line - b.line);
  if (refused.length > 0) log.error({ file: origin, refused: state.rosterRefused }, 'roster lines refused: each is as if absent until the file is fixed (GET /health shows them); the other lines are taken');
  const out = new Set(refused.map((r) => r.line));
  return lines.filter((l) => !out.has(l.line));
}

/** A roster line's bcrypt hash; `fresh`: hashed now (a new line, or its password changed), not taken from the cache. */
export interface RosterHash {
  hash: string;
  fresh: boolean;
}

/**
 * Hashes the roster's plain passwords in bcrypt's thread pool, by username;
 * the plain text is dropped after. With `cacheFile`, a password unchanged
 * since the last start keeps its hash: at cost 10 a hash is ~55 ms, so a
 * roster of thousands would otherwise cost every start tens of seconds. The
 * cache holds each hash beside a SHA-256 of the password under a random salt
 * of its own, in a 0600 file next to the roster's own plain text: nothing an
 * intruder could not read in the roster file itself.
 */
export async function rosterPasswordHashes(roster: RosterAccount[], rounds: number, cacheFile?: string): Promise<Map<string, RosterHash>> {
  const cache = cacheFile ? readHashCache(cacheFile) : { salt: randomBytes(16).toString('hex'), entries: {} as Record<string, CachedHash> };
  const check = (password: string) => createHash('sha256').update(cache.salt).update(password).digest('hex');
  const entries: Record<string, CachedHash> = {};
  const out = new Map<string, RosterHash>();
  await Promise.all(
    roster.map(async (r) => {
      const c = check(r.password);
      const cached = cache.entries[r.username];
      const fresh = !(cached && cached.check === c && cached.rounds === rounds);
      const hash = fresh ? await bcrypt.hash(r.password, rounds) : cached.hash;
      out.set(r.username, { hash, fresh });
      entries[r.username] = { check: c, rounds, hash };
    }),
  );
  if (cacheFile && [...out.values()].some((h) => h.fresh)) {
    // Whole file or nothing: a torn cache would only cost hashes, but a rename costs nothing.
    mkdirSync(dirname(cacheFile), { recursive: true });
    writeFileSync(`${cacheFile}.tmp`, JSON.stringify({ salt: cache.salt, entries }), { mode: 0o600 });
    renameSync(`${cacheFile}.tmp`, cacheFile);
  }
  return out;
}

/**
 * Gives the roster's accounts in `state` their hashes (at a start: the lines
 * taken); a roster account without a line is closed. Returns how many were
 * hashed now and how many came from the cache.
 */
export function setRosterHashes(state: EngineState, hashes: Map<string, RosterHash>): { hashed: number; reused: number } {
  let hashed = 0;
  let reused = 0;
  for (const acc of state.accounts.values()) {
    if (acc.source !== 'roster') continue;
    const h = hashes.get(acc.username);
    acc.closed = h === undefined;
    if (!h) continue;
    acc.passwordHash = h.hash;
    if (h.fresh) hashed++;
    else reused++;
  }
  return { hashed, reused };
}

/**
 * The roster in force, kept beside the hash cache after every reading that
 * was taken: the lines taken (their bcrypt hashes) and every username of the
 * file. An engine restarted while the file cannot be read (moved, deleted,
 * half-saved) starts from it instead of stopping: it would not be restarted,
 * and the whole system would stop with it. 0600, as the hash cache: nothing
 * the roster file itself does not give away.
 */
export interface RosterInForce {
  hashes: Map<string, RosterHash>;
  usernames: Set<string>;
}

export function saveRosterInForce(file: string, taken: RosterAccount[], hashes: Map<string, RosterHash>, usernames: Set<string>): void {
  const lines = Object.fromEntries(taken.flatMap((l) => (hashes.has(l.username) ? [[l.username, hashes.get(l.username)!.hash]] : [])));
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp`, JSON.stringify({ v: 1, lines, usernames: [...usernames] }), { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

/** The roster in force saved by the last reading, or null when there is none (or it does not read). */
export function loadRosterInForce(file: string): RosterInForce | null {
  try {
    const r = JSON.parse(readFileSync(file, 'utf8')) as { v?: unknown; lines?: unknown; usernames?: unknown };
    if (r.v !== 1 || !r.lines || typeof r.lines !== 'object' || !Array.isArray(r.usernames)) return null;
    const hashes = new Map(Object.entries(r.lines as Record<string, unknown>).flatMap(([u, h]) => (typeof h === 'string' ? [[u, { hash: h, fresh: false }]] : [])));
    return { hashes, usernames: new Set(r.usernames.filter((u): u is string => typeof u === 'string')) };
  } catch {
    return null;
  }
}

interface CachedHash {
  check: string;
  rounds: number;
  hash: string;
}

function readHashCache(file: string): { salt: string; entries: Record<string, CachedHash> } {
  try {
    const c = JSON.parse(readFileSync(file, 'utf8')) as { salt?: unknown; entries?: unknown };
    if (typeof c.salt === 'string' && c.salt.length >= 32 && c.entries && typeof c.entries === 'object') return { salt: c.salt, entries: c.entries as Record<string, CachedHash> };
  } catch {
    // No cache yet, or unreadable: every password is hashed again.
  }
  return { salt: randomBytes(16).toString('hex'), entries: {} };
}

/**
 * Seals every password hash the engine holds in clear (proto/engine.ts
 * SEALED_HASH_PREFIX): the roster's, just hashed, and registered accounts'
 * from journals written before sealing existed. Run at start, before the
 * engine answers or snapshots: from then on the credentials reply, and every
 * snapshot, carry sealed hashes only. Returns how many it sealed; throws a
 * ConfigError when hashes sealed before do not open with this key.
 */
export function sealAccountHashes(state: EngineState, key: CredentialsKey): number {
  let sealed = 0;
  const unopened: string[] = [];
  for (const acc of state.accounts.values()) {
    if (acc.passwordHash === '') continue;
    if (isSealed(acc.passwordHash)) {
      if (key.open(acc.passwordHash, acc.username) === null) unopened.push(acc.username);
      continue;
    }
    acc.passwordHash = key.seal(acc.passwordHash, acc.username);
    sealed++;
  }
  // A lost or swapped key would lock every registered team out with a 503 at each sign-in: better not to start.
  if (unopened.length > 0) {
    throw new ConfigError(
      `credentials key ${key.file}: the password hashes of ${unopened.length} registered account(s) (${unopened.slice(0, 3).join(', ')}) do not open with it: start with the key file they were sealed with (CREDENTIALS_KEY_FILE)`,
    );
  }
  return sealed;
}
