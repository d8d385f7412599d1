import bcrypt from 'bcrypt';
import type { JournalEvent } from '../../proto/journal.js';
import type { RosterAccount } from '../config/accounts.js';
import type { EngineState } from './state.js';
import { shardOfClient } from '../../proto/shards.js';

/**
 * The roster lines an engine shard owns (proto/shards.ts), and every roster
 * username, which no shard may let anyone register. With several shards a
 * line must name its client_id: ids handed out in file order would differ
 * with each shard's history.
 */
export function rosterForShard(roster: RosterAccount[], shard: number, shards: number, origin: string): { own: RosterAccount[]; usernames: Set<string> } {
  const usernames = new Set(roster.map((r) => r.username));
  if (shards === 1) return { own: roster, usernames };
  const own = roster.filter((r) => {
    if (r.clientId === undefined) throw new Error(`accounts file ${origin}, line ${r.line}: with ${shards} engine shards every line needs its client_id`);
    return shardOfClient(r.clientId, shards) === shard;
  });
  return { own, usernames };
}

/**
 * Reconciles the roster file with the journaled state. Returns the events for
 * roster accounts seen for the first time (journaled so their client_id and
 * opening holdings are fixed forever), or throws naming the line that
 * conflicts with history.
 */
export function rosterEvents(state: EngineState, roster: RosterAccount[], origin: string, now: number): JournalEvent[] {
  const events: JournalEvent[] = [];
  let maxId = state.maxClientId;
  for (const r of roster) maxId = Math.max(maxId, r.clientId ?? 0);
  for (const r of roster) {
    const fail = (msg: string): never => {
      throw new Error(`accounts file ${origin}, line ${r.line}: ${msg}`);
    };
    const known = state.byUsername.get(r.username);
    if (known) {
      if (known.source !== 'roster') fail(`username ${r.username} was already registered through /register as client_id ${known.clientId}`);
      if (r.clientId !== undefined && r.clientId !== known.clientId) {
        fail(`username ${r.username} is client_id ${known.clientId} in the journal, not ${r.clientId}`);
      }
      continue;
    }
    if (r.clientId !== undefined) {
      const holder = state.accounts.get(r.clientId);
      if (holder) fail(`client_id ${r.clientId} already belongs to ${holder.username}`);
    }
    const clientId = r.clientId ?? ++maxId;
    events.push({
      t: 'account',
      clientId,
      username: r.username,
      source: 'roster',
      ...(r.opening.length > 0 ? { opening: r.opening } : {}),
      ts: now,
    });
  }
  return events;
}

/** Hashes the roster's plain passwords in bcrypt's thread pool; the plain text is dropped after. */
export async function hashRosterPasswords(state: EngineState, roster: RosterAccount[], rounds: number): Promise<void> {
  await Promise.all(
    roster.map(async (r) => {
      const acc = state.byUsername.get(r.username);
      if (acc) acc.passwordHash = await bcrypt.hash(r.password, rounds);
    }),
  );
}
