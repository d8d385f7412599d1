import { describe, expect, it } from 'vitest';
import { routeOf, shardNames, shardOfClient, shardOfUsername } from '../proto/shards.js';
import { ENGINE_COMMAND_SUBJECT, JOURNAL_STREAM, JOURNAL_SUBJECT } from '../proto/subjects.js';
import { SNAPSHOT_STREAM } from '../proto/streams.js';
import { rolePermissions, ROLE_PERMISSIONS } from '../proto/roles.js';
import { mergeShardReplies } from '../src/shared/shard-merge.js';
import { rosterForShard } from '../src/engine/roster.js';
import type { EngineCommand, ReplyTo } from '../proto/engine.js';

/** How accounts split over engine shards (proto/shards.ts), and how the gateway puts their answers together. */
describe('shard names and routes', () => {
  it('keeps one engine on the names the system always used', () => {
    const n = shardNames(0, 1);
    expect([n.command, n.journalStream, n.journalSubject, n.snapshotStream]).toEqual([ENGINE_COMMAND_SUBJECT, JOURNAL_STREAM, JOURNAL_SUBJECT, SNAPSHOT_STREAM]);
    expect(rolePermissions(1)).toEqual(ROLE_PERMISSIONS);
  });

  it('gives every shard its own subjects and streams', () => {
    const names = [0, 1, 2].map((k) => shardNames(k, 3));
    for (const key of ['command', 'admin', 'names', 'journalStream', 'journalSubject', 'snapshotStream', 'snapshotChunk', 'snapshotManifest'] as const) {
      expect(new Set(names.map((n) => n[key])).size).toBe(3);
    }
    expect(() => shardNames(2, 2)).toThrow();
    expect(() => shardNames(0, 0)).toThrow();
  });

  it('routes account commands by client_id, registrations by username, operator writes to all', () => {
    expect(routeOf({ op: 'create', clientId: 7, etf: 'UNDY', amount: 1 }, 2)).toEqual({ to: 'one', shard: 1 });
    expect(routeOf({ op: 'holdings', clientId: 8 }, 2)).toEqual({ to: 'one', shard: 0 });
    expect(routeOf({ op: 'register', username: 'alice', passwordHash: 'h' }, 2)).toEqual({ to: 'one', shard: shardOfUsername('alice', 2) });
    expect(routeOf({ op: 'credentials', username: 'alice' }, 2)).toEqual({ to: 'find' });
    // A roster line's username is reserved where a /register of it would go.
    expect(routeOf({ op: 'claim', username: 'alice', clientId: 8 }, 2)).toEqual(routeOf({ op: 'register', username: 'alice', passwordHash: 'h' }, 2));
    expect(routeOf({ op: 'halt', etf: null, reason: 'r', by: 'op' }, 2)).toEqual({ to: 'all' });
    expect(routeOf({ op: 'create', clientId: 7, etf: 'UNDY', amount: 1 }, 1)).toEqual({ to: 'one', shard: 0 });
  });

  it('hashes usernames the same way everywhere, spread over the shards', () => {
    // FNV-1a's published test vectors: fixed, so a gateway and an engine of another version agree.
    expect(shardOfUsername('a', 2 ** 32 - 1)).toBe(0xe40c292c % (2 ** 32 - 1));
    expect(shardOfUsername('foobar', 2 ** 32 - 1)).toBe(0xbf9cf968 % (2 ** 32 - 1));
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 4000; i++) counts[shardOfUsername(`team${i}`, 4)]!++;
    for (const c of counts) expect(c).toBeGreaterThan(800);
    expect(shardOfClient(10, 4)).toBe(2);
  });
});

describe('answers from several shards', () => {
  const cred: EngineCommand = { op: 'credentials', username: 'bob' };
  it('finds a username on the shard that has it, and says not found only when every shard does', () => {
    const notFound = { id: 1, ok: false as const, error: { code: 'not_found' as const, message: 'no' } };
    const found = { id: 2, ok: true as const, result: { client_id: 3, passwordHash: 'h' } };
    const down = { id: 3, ok: false as const, error: { code: 'engine_unavailable' as const, message: 'late' } };
    const merge = (rs: unknown[]) => mergeShardReplies(cred, { to: 'find' }, rs as ReplyTo<typeof cred>[]);
    expect(merge([notFound, found])).toBe(found);
    expect(merge([notFound, notFound])).toBe(notFound);
    // A shard that did not answer may hold the name: unavailable, not "no such user".
    expect(merge([notFound, down])).toBe(down);
  });

  it('gathers every shard\'s accounts into one dump, with each shard\'s sequences', () => {
    const dump: EngineCommand = { op: 'dump' };
    const parts = [
      { id: 1, ok: true as const, result: { journal_seq: 5, fill_seq: 9, accounts: [{ client_id: 2, username: 'b', positions: [], cash: 0 }] } },
      { id: 2, ok: true as const, result: { journal_seq: 3, fill_seq: 8, accounts: [{ client_id: 1, username: 'a', positions: [], cash: 0 }] } },
    ];
    const merged = mergeShardReplies(dump, { to: 'all' }, parts as ReplyTo<typeof dump>[]);
    if (!merged.ok) throw new Error('expected ok');
    expect(merged.result.accounts.map((a) => a.client_id)).toEqual([1, 2]);
    expect(merged.result.shards).toEqual([
      { shard: 0, journal_seq: 5, fill_seq: 9 },
      { shard: 1, journal_seq: 3, fill_seq: 8 },
    ]);
  });

  it('fails an operator write that one shard refused', () => {
    const halt: EngineCommand = { op: 'halt', etf: null, reason: 'r', by: 'op' };
    const refused = { id: 2, ok: false as const, error: { code: 'engine_unavailable' as const, message: 'late' } };
    expect(mergeShardReplies(halt, { to: 'all' }, [{ id: 1, ok: true, result: {} } as never, refused])).toBe(refused);
  });
});

describe('the roster over shards', () => {
  const line = (username: string, clientId: number | undefined, n: number) => ({ username, password: 'pw', clientId, opening: [], line: n });
  it('gives each shard its own lines and every shard every username', () => {
    const roster = [line('a', 1, 1), line('b', 2, 2), line('c', 3, 3)] as never[];
    const s1 = rosterForShard(roster, 1, 2);
    expect(s1.own.map((r: { username: string }) => r.username)).toEqual(['a', 'c']);
    expect([...s1.usernames]).toEqual(['a', 'b', 'c']);
  });
  it('refuses a line without a client_id when there are several shards, and takes the others', () => {
    const s0 = rosterForShard([line('a', undefined, 4), line('b', 2, 5)] as never[], 0, 2);
    expect(s0.refused).toEqual([{ line: 4, reason: 'with 2 engine shards every line needs its client_id' }]);
    expect(s0.own.map((r: { username: string }) => r.username)).toEqual(['b']);
  });
});
