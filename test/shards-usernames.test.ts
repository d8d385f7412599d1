import { afterEach, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { encode } from '../proto/codec.js';
import { JOURNAL_VERSION, type JournalBatch } from '../proto/journal.js';
import type { Config } from '../src/config/config.js';
import { startEngine } from '../src/engine/service.js';
import { shardNames, shardOfClient, shardOfUsername } from '../proto/shards.js';
import { api, natsClient, quietLog, startSystem, startTestNats, tempDir, testConfig, type TestSystem } from './helpers/system.js';

/**
 * One username is one account, however many engine shards. A roster line's
 * account lives on its client_id's shard, a /register on the shard its
 * username hashes to: `5 bob` is shard 1's line, a /register of bob shard
 * 0's. Whichever of the two comes first wins, as on one engine: a line whose
 * name was registered is refused (the team registered keeps it), and a name
 * a line took is refused to /register, even once the line is gone. Each case
 * runs on one engine too, and must end the same.
 */
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const ROSTER = '1 team1 team1pass\n2 team2 team2pass\n';
const BOB_LINE = '5 bob bob-roster-pass\n';

it('the names these cases use fall on two shards', () => {
  expect(shardOfClient(5, 2)).toBe(1);
  expect(shardOfUsername('bob', 2)).toBe(0);
  expect(shardOfUsername('Bob', 2)).toBe(0);
});

async function system(shards: number) {
  const nats = await startTestNats();
  cleanups.push(() => nats.stop(), () => nats.remove());
  const dir = tempDir();
  cleanups.push(() => dir.remove());
  // Every sign-in asks the engine again: what it shows is the engines' accounts as they are now.
  const cfg: Config = { ...testConfig(dir.path, { roster: ROSTER, ...(shards > 1 ? { engine: { shards } } : {}) }), rosterPollMs: 20, credentialsCacheMs: 0 };
  const start = async () => {
    const sys = await startSystem(nats.url, cfg);
    let open = true;
    cleanups.push(() => open && sys.close());
    return { sys, close: () => ((open = false), sys.close()) };
  };
  let run = await start();
  const nc = await natsClient(nats.url);
  cleanups.push(() => nc.close());
  const s = {
    nats,
    cfg,
    nc,
    get sys(): TestSystem {
      return run.sys;
    },
    get http() {
      return api(run.sys.url);
    },
    /** Writes the roster file and waits for a reading of it by each engine in `shards` (default all). */
    write: async (text: string, which: number[] = run.sys.engines.map((_, k) => k)) => {
      const reads = which.map((k) => run.sys.engines[k]!.roster!.next());
      writeFileSync(cfg.accountsFile, text);
      return Promise.all(reads);
    },
    /** Every account of that name, on every shard. */
    accounts: (username: string) =>
      run.sys.engines.flatMap((e, shard) => [...e.state.accounts.values()].filter((a) => a.username === username).map((a) => ({ shard, client_id: a.clientId, source: a.source, closed: a.closed }))),
    /** Stops the whole system and starts it again on the same streams; `replay`: without snapshots, from the whole journal. */
    restart: async (replay = false, whileDown?: () => Promise<unknown>) => {
      await run.close();
      await whileDown?.();
      if (replay) {
        const jsm = await jetstreamManager(nc);
        for (let k = 0; k < shards; k++) await jsm.streams.purge(shardNames(k, shards).snapshotStream);
      }
      run = await start();
    },
  };
  return s;
}

const signIn = async (s: Awaited<ReturnType<typeof system>>, password: string) => (await s.http.holdings('bob', password)).status;

describe.each([1, 2])('one username, one account, on %i engine shard(s)', (shards) => {
  it('/register first, then a roster line of that name: the line is refused and the registered team keeps the name', async () => {
    const s = await system(shards);
    const reg = await s.http.register('bob', 'bob-register-pass');
    expect(reg.status).toBe(200);
    const id = reg.body.client_id as number;

    await s.write(`${ROSTER}${BOB_LINE}`);
    expect(s.accounts('bob')).toEqual([{ shard: shards === 1 ? 0 : shardOfUsername('bob', shards), client_id: id, source: 'register', closed: false }]);
    expect(await signIn(s, 'bob-register-pass')).toBe(200);
    expect(await signIn(s, 'bob-roster-pass')).toBe(401);
    // Refused in the words one engine uses, by the shard the line belongs to.
    const lineShard = shards === 1 ? 0 : shardOfClient(5, shards);
    expect(s.sys.engines[lineShard]!.state.rosterRefused).toEqual([{ line: 3, reason: `username bob was already registered through /register as client_id ${id}` }]);
    expect((await s.http.send('GET', '/health')).body.roster_refused_lines).toEqual([3]);

    // So it stays across a restart, from snapshots or from the whole journal.
    for (const replay of [false, true]) {
      await s.restart(replay);
      expect(s.accounts('bob')).toEqual([expect.objectContaining({ client_id: id, source: 'register', closed: false })]);
      expect(await signIn(s, 'bob-register-pass')).toBe(200);
      expect(await signIn(s, 'bob-roster-pass')).toBe(401);
    }
  });

  it('a roster line first, then /register of that name: refused, also once the line is gone, and after a restart', async () => {
    const s = await system(shards);
    await s.write(`${ROSTER}${BOB_LINE}`);
    expect(s.accounts('bob')).toEqual([{ shard: shards === 1 ? 0 : 1, client_id: 5, source: 'roster', closed: false }]);
    expect(await signIn(s, 'bob-roster-pass')).toBe(200);
    expect((await s.http.register('bob', 'bob-register-pass')).body.error?.code).toBe('username_taken');

    // Taken out of the file, the account stays (closed), and so does its name.
    await s.write(ROSTER);
    expect((await s.http.register('bob', 'bob-register-pass')).body.error?.code).toBe('username_taken');
    expect(s.accounts('bob')).toEqual([expect.objectContaining({ client_id: 5, source: 'roster', closed: true })]);
    for (const replay of [false, true]) {
      await s.restart(replay);
      expect((await s.http.register('bob', 'bob-register-pass')).body.error?.code).toBe('username_taken');
      expect(s.accounts('bob')).toEqual([expect.objectContaining({ client_id: 5, source: 'roster', closed: true })]);
    }
    // Put back, the roster team signs in again.
    await s.write(`${ROSTER}${BOB_LINE}`);
    expect(await signIn(s, 'bob-roster-pass')).toBe(200);
  });

  it('a /register racing a roster line of the same name: one account, whichever wins', async () => {
    const s = await system(shards);
    const [reg] = await Promise.all([s.http.register('bob', 'bob-register-pass'), s.write(`${ROSTER}${BOB_LINE}`)]);
    const bob = s.accounts('bob').filter((a) => !a.closed);
    expect(bob).toHaveLength(1);
    expect(bob[0]!.source).toBe(reg.status === 200 ? 'register' : 'roster');
    expect([await signIn(s, 'bob-register-pass'), await signIn(s, 'bob-roster-pass')]).toEqual(reg.status === 200 ? [200, 401] : [401, 200]);
  });

  it('a line its own shard refuses (its client_id is another account\'s) keeps no name from /register once it is gone', async () => {
    const s = await system(shards);
    // Client_id 1 is team1's, even out of the file.
    await s.write('2 team2 team2pass\n1 bob bob-roster-pass\n');
    expect(s.sys.engines[shards === 1 ? 0 : shardOfClient(1, shards)]!.state.rosterRefused).toEqual([{ line: 2, reason: 'client_id 1 already belongs to team1' }]);
    await s.write(ROSTER);
    expect((await s.http.register('bob', 'bob-register-pass')).status).toBe(200);
    expect(s.accounts('bob')).toEqual([expect.objectContaining({ source: 'register', closed: false })]);
  });

  it('usernames are case-sensitive, as they always were: Bob is not bob', async () => {
    const s = await system(shards);
    await s.write(`${ROSTER}${BOB_LINE}`);
    expect((await s.http.register('Bob', 'bob-register-pass')).status).toBe(200);
    expect((await s.http.holdings('Bob', 'bob-register-pass')).status).toBe(200);
    expect(await signIn(s, 'bob-roster-pass')).toBe(200);
  });
});

describe('a roster line whose username another engine shard decides', () => {
  it('is refused to /register on that shard even before that shard reads the file', async () => {
    const s = await system(2);
    // Shard 0 reads no more (each shard polls the file on its own): a /register there cannot learn the line from its own reading.
    await s.sys.engines[0]!.roster!.stop();
    await s.write(`${ROSTER}${BOB_LINE}`, [1]);
    expect(s.accounts('bob')).toEqual([{ shard: 1, client_id: 5, source: 'roster', closed: false }]);
    expect((await s.http.register('bob', 'bob-register-pass')).body.error?.code).toBe('username_taken');
    expect(s.accounts('bob')).toHaveLength(1);
    expect(await signIn(s, 'bob-roster-pass')).toBe(200);
  });

  it('two accounts of one name journaled by engines from before reservations: the registered one keeps it, the line is refused', async () => {
    const s = await system(2);
    const id = (await s.http.register('bob', 'bob-register-pass')).body.client_id as number;
    await s.restart(false, async () => {
      // What shard 1 journaled for the line then: the account, opened without asking shard 0.
      await jetstream(s.nc).publish(shardNames(1, 2).journalSubject, encode({ v: JOURNAL_VERSION, events: [{ t: 'account', clientId: 5, username: 'bob', source: 'roster', ts: Date.now() }] } satisfies JournalBatch));
      writeFileSync(s.cfg.accountsFile, `${ROSTER}${BOB_LINE}`);
    });
    expect(s.accounts('bob')).toEqual([
      { shard: 0, client_id: id, source: 'register', closed: false },
      { shard: 1, client_id: 5, source: 'roster', closed: true },
    ]);
    expect(s.sys.engines[1]!.state.rosterRefused).toEqual([{ line: 3, reason: `username bob was already registered through /register as client_id ${id}` }]);
    expect(await signIn(s, 'bob-register-pass')).toBe(200);
    expect(await signIn(s, 'bob-roster-pass')).toBe(401);
  });

  it('waits while that shard is down, and is taken once it starts', async () => {
    const s = await system(2);
    await s.sys.engines[0]!.close();
    const [read] = await s.write(`${ROSTER}${BOB_LINE}`, [1]);
    expect(read!.unanswered).toEqual(['bob']);
    expect(read!.refused).toEqual([{ line: 3, reason: expect.stringMatching(/^username bob waits for engine shard 0, which decides that name/) }]);
    expect(s.accounts('bob')).toEqual([]);

    s.sys.engines[0] = await startEngine({ ...s.cfg, engine: { shards: 2, shard: 0 } }, s.nats.url, quietLog, (err) => {
      throw err;
    });
    await s.sys.engines[1]!.roster!.settled();
    expect(s.accounts('bob')).toEqual([{ shard: 1, client_id: 5, source: 'roster', closed: false }]);
    expect(s.sys.engines[1]!.state.rosterRefused).toEqual([]);
    expect(await signIn(s, 'bob-roster-pass')).toBe(200);
    expect((await s.http.register('bob', 'bob-register-pass')).body.error?.code).toBe('username_taken');
  });
});
