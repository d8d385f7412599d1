/**
 * Engine shards. Accounts are split over N engines by client_id: shard k is
 * the single writer of the client_ids equal to k modulo N, with its own
 * command subjects, journal stream and snapshot stream. N = 1 (the default)
 * is one engine on the names the system always used, so an existing journal
 * is shard 0 of 1 as it stands.
 *
 * New usernames go to the shard their name hashes to, which hands out
 * client_ids of its own residue: a username is then only ever registered by
 * one shard, and its client_id routes back to that shard. A roster line's
 * account lives on its client_id's shard, but its username is decided by the
 * name's shard too: the line's shard asks it to reserve the name (the `claim`
 * command on ShardNames.names) before opening the account, so a /register and
 * a roster line of one name are ordered by that one shard, whichever comes
 * first, and one username is one account across all shards.
 */
import type { EngineCommand } from './engine.js';
import { ENGINE_ADMIN_SUBJECT, ENGINE_COMMAND_SUBJECT, ENGINE_NAMES_SUBJECT_PREFIX, ENGINE_QUEUE, ENGINE_STARTED_SUBJECT_PREFIX, JOURNAL_STREAM, JOURNAL_SUBJECT, NOTICES_SUBJECT_PREFIX, SIGNIN_SUBJECT_PREFIX } from './subjects.js';
import { JOURNAL_STREAM_CONFIG, SNAPSHOT_CHUNK_SUBJECT, SNAPSHOT_MANIFEST_SUBJECT, SNAPSHOT_STREAM, SNAPSHOT_STREAM_CONFIG } from './streams.js';

export interface ShardNames {
  shard: number;
  shards: number;
  command: string;
  admin: string;
  queue: string;
  journalStream: string;
  journalSubject: string;
  snapshotStream: string;
  snapshotChunk: string;
  snapshotManifest: string;
  /** Where the shard publishes its NoticeBatches (a new name: the same pattern for N = 1). */
  notices: string;
  /** Where it says which accounts' sign-in changed (proto/engine.ts SignInChanges). */
  signin: string;
  /** Where it says it serves, once per start (proto/engine.ts EngineStarted). */
  started: string;
  /** Where other shards ask it to reserve a username it decides (proto/engine.ts `claim`). */
  names: string;
}

export const MAX_SHARDS = 64;

export function shardNames(shard: number, shards: number): ShardNames {
  if (!Number.isInteger(shards) || shards < 1 || shards > MAX_SHARDS) throw new Error(`shards must be a whole number from 1 to ${MAX_SHARDS}, not ${shards}`);
  if (!Number.isInteger(shard) || shard < 0 || shard >= shards) throw new Error(`shard must be a whole number from 0 to ${shards - 1}, not ${shard}`);
  if (shards === 1) {
    return {
      shard,
      shards,
      command: ENGINE_COMMAND_SUBJECT,
      admin: ENGINE_ADMIN_SUBJECT,
      queue: ENGINE_QUEUE,
      journalStream: JOURNAL_STREAM,
      journalSubject: JOURNAL_SUBJECT,
      snapshotStream: SNAPSHOT_STREAM,
      snapshotChunk: SNAPSHOT_CHUNK_SUBJECT,
      snapshotManifest: SNAPSHOT_MANIFEST_SUBJECT,
      notices: `${NOTICES_SUBJECT_PREFIX}.${shard}`,
      signin: `${SIGNIN_SUBJECT_PREFIX}.${shard}`,
      started: `${ENGINE_STARTED_SUBJECT_PREFIX}.${shard}`,
      names: `${ENGINE_NAMES_SUBJECT_PREFIX}.${shard}`,
    };
  }
  return {
    shard,
    shards,
    command: `${ENGINE_COMMAND_SUBJECT}.${shard}`,
    admin: `${ENGINE_ADMIN_SUBJECT}.${shard}`,
    queue: `${ENGINE_QUEUE}-${shard}`,
    journalStream: `${JOURNAL_STREAM}_${shard}`,
    journalSubject: `${JOURNAL_SUBJECT}.${shard}`,
    snapshotStream: `${SNAPSHOT_STREAM}_${shard}`,
    snapshotChunk: `${SNAPSHOT_CHUNK_SUBJECT}.${shard}`,
    snapshotManifest: `${SNAPSHOT_MANIFEST_SUBJECT}.${shard}`,
    notices: `${NOTICES_SUBJECT_PREFIX}.${shard}`,
    signin: `${SIGNIN_SUBJECT_PREFIX}.${shard}`,
    started: `${ENGINE_STARTED_SUBJECT_PREFIX}.${shard}`,
    names: `${ENGINE_NAMES_SUBJECT_PREFIX}.${shard}`,
  };
}

/** A shard's journal and snapshot streams: the single engine's settings under the shard's names. */
export const journalStreamConfig = (n: ShardNames) => ({ ...JOURNAL_STREAM_CONFIG, name: n.journalStream, subjects: [n.journalSubject] });
export const snapshotStreamConfig = (n: ShardNames) => ({ ...SNAPSHOT_STREAM_CONFIG, name: n.snapshotStream, subjects: [n.snapshotChunk, n.snapshotManifest] });

export const shardOfClient = (clientId: number, shards: number): number => clientId % shards;

/** FNV-1a of the UTF-8 bytes: stable across processes and versions, unlike anything seeded. */
export function shardOfUsername(username: string, shards: number): number {
  if (shards === 1) return 0;
  let h = 0x811c9dc5;
  for (const b of Buffer.from(username, 'utf8')) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % shards;
}

/**
 * Where a command goes: one shard, every shard (operator writes, which each
 * shard journals; reads that gather from all), or every shard with the first
 * found answer kept (a username whose shard the gateway cannot know: roster
 * accounts live by client_id).
 */
export type Route = { to: 'one'; shard: number } | { to: 'all' } | { to: 'find' } | { to: 'first' };

export function routeOf(cmd: EngineCommand, shards: number): Route {
  if (shards === 1) return { to: 'one', shard: 0 };
  switch (cmd.op) {
    case 'create':
    case 'redeem':
    case 'request':
    case 'history':
    case 'holdings':
      return { to: 'one', shard: shardOfClient(cmd.clientId, shards) };
    case 'register':
    case 'claim':
      return { to: 'one', shard: shardOfUsername(cmd.username, shards) };
    case 'credentials':
      return { to: 'find' };
    case 'rules':
      // Every shard journals the same operator commands: any one answers for all.
      return { to: 'first' };
    case 'ping':
    case 'dump':
    case 'halt':
    case 'resume':
    case 'set_basket':
    case 'set_rules':
      return { to: 'all' };
  }
}
