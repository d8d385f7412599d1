import { afterEach, describe, expect, it } from 'vitest';
import { rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import WebSocket from 'ws';
import type { Config } from '../src/config/config.js';
import { startEngine } from '../src/engine/service.js';
import { startGateway } from '../src/gateway/server.js';
import { emptyState, positionList } from '../src/engine/state.js';
import { applyEvent } from '../src/engine/core.js';
import { RosterWatch, rosterFileStamp } from '../src/engine/roster-watch.js';
import { rosterPasswordHashes } from '../src/engine/roster.js';
import { loadBaskets } from '../src/config/baskets.js';
import { CredentialsKey } from '../src/shared/credentials-key.js';
import { FILL_STREAM } from '../proto/subjects.js';
import { OPERATOR_ROUTES } from '../proto/operator.js';
import { EtfClient } from '../src/client/index.js';
import { shardNames } from '../proto/shards.js';
import { awaitHoldings } from './helpers/events.js';
import { api, fillsFor, natsClient, publishFills, quietLog, startSystem, startTestNats, tempDir, testConfig, undyBasket, until } from './helpers/system.js';

/**
 * NDFEX reads its users.txt only at its own start, so an instructor adds a
 * team by editing the file and restarting the exchange. The engine reads the
 * roster file again whenever it changes: the team signs in without an engine
 * restart, from the fills the exchange already made for its client_id. A file
 * that does not read, or that conflicts with history, changes nothing.
 */
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const ROSTER = '1 team1 team1pass\n2 team2 team2pass\n';
const OPERATOR = { username: 'op', password: 'op-secret-pass' };

/** A TCP link to a nats-server that the test can cut (every connection dropped, none taken) and mend. */
async function natsLink(target: string) {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  let open = true;
  const server = createServer((client) => {
    if (!open) return void client.destroy();
    const upstream = connect(Number(port), hostname);
    const end = () => {
      for (const s of [client, upstream]) (s.destroy(), sockets.delete(s));
    };
    for (const s of [client, upstream]) (sockets.add(s), s.on('error', end), s.on('close', end));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `nats://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cut: () => {
      open = false;
      for (const s of [...sockets]) s.destroy();
    },
    mend: () => void (open = true),
    close: () => new Promise<void>((resolve) => (server.close(() => resolve()), [...sockets].forEach((s) => s.destroy()))),
  };
}

async function system(shards = 1, credentialsCacheMs = 0) {
  const nats = await startTestNats();
  cleanups.push(() => nats.stop(), () => nats.remove());
  const dir = tempDir();
  cleanups.push(() => dir.remove());
  // By default every sign-in asks the engine for the hash again (no cache time): a password changed in the file counts at once.
  const cfg: Config = { ...testConfig(dir.path, { roster: ROSTER, operator: OPERATOR, ...(shards > 1 ? { engine: { shards } } : {}) }), rosterPollMs: 20, credentialsCacheMs };
  const sys = await startSystem(nats.url, cfg);
  let open = true;
  cleanups.push(() => open && sys.close());
  const nc = await natsClient(nats.url);
  cleanups.push(() => nc.close());
  return {
    nats,
    cfg,
    sys,
    nc,
    http: api(sys.url) as ReturnType<typeof api>,
    /** Writes the roster file and waits for the engine's reading of it (every shard's; the first shard's outcome). */
    write: async (text: string) => {
      const reads = sys.engines.map((e) => e.roster!.next());
      writeFileSync(cfg.accountsFile, text);
      return (await Promise.all(reads))[0]!;
    },
    close: async () => {
      open = false;
      await sys.close();
    },
  };
}

describe('the roster file read again when it changes', () => {
  it('a line added signs in at once, with the fills the exchange made for its client_id, and stays so after a restart', async () => {
    const s = await system();
    await publishFills(s.nc, [
      { seq: 1, client_id: 7, symbol: 3, side: 1, quantity: 5, price: 100 },
      { seq: 2, client_id: 7, symbol: 4, side: 1, quantity: 2, price: 50 },
    ]);
    const last = (await (await jetstreamManager(s.nc)).streams.info(FILL_STREAM)).state.last_seq;
    await until(() => s.sys.engine.state.fillSeq >= last, 'the engine to pass the fills');
    expect((await s.http.holdings('team7', 'team7pass')).status).toBe(401);

    // Holdings streams and the desk hear of its positions as it opens, not at its next change.
    const opened = awaitHoldings(s.nc, 7, (c) => c.cause === 'opening', 'its opening');
    const r = await s.write(`${ROSTER}7 team7 team7pass\n`);
    expect(r).toEqual({ added: ['team7'], claimed: ['team7'], passwordsChanged: [], restored: [], removed: [] });
    expect(await opened).toMatchObject({ cause: 'opening', positions: [3, 5, 4, 2], deltas: [3, 5, 4, 2], cash: -600 });
    const h = await s.http.holdings('team7', 'team7pass');
    expect(h.status).toBe(200);
    expect(h.body.holdings).toEqual({ KNAN: 5, STED: 2 });
    expect(h.body.cash).toBe(-600);
    // Its next fill is its own, as any team's.
    await publishFills(s.nc, [{ seq: 3, client_id: 7, symbol: 3, side: 2, quantity: 1, price: 100 }]);
    await until(async () => (await s.http.holdings('team7', 'team7pass')).body.holdings.KNAN === 4, 'the next fill');

    // Journaled where it was made among the fills: a replay of the journal and the fill stream alone (no snapshot) gives the same.
    await s.close();
    await (await jetstreamManager(s.nc)).streams.purge(shardNames(0, 1).snapshotStream);
    const engine = await startEngine(s.cfg, s.nats.url, quietLog, (err) => {
      throw err;
    });
    cleanups.push(() => engine.close());
    expect(engine.ready.snapshot).toBeNull();
    expect(positionList(engine.state.accounts.get(7)!)).toEqual([[3, 4], [4, 2]]);
    expect(engine.state.accounts.get(7)!.cash).toBe(-500);
  });

  it('a line that does not read or conflicts with history is refused alone (as if absent, on /health), the others taken; a restarted engine takes the file alike', async () => {
    const s = await system();
    expect((await s.http.register('late', 'latepass1')).status).toBe(200);
    // Before, one such line refused the whole file; and an engine restarted on it stopped with a config error (not restarted).
    const r = await s.write('1 team1 team1pass\n2 team2\n7 team7 team7pass\n8 late latepass2\n9 team9 team9pass KNAN\n3 team1 otherpass\n2 team6 team6pass\n');
    const refused = [
      { line: 2, reason: expect.stringMatching(/^expected "client_id username password"/) },
      { line: 4, reason: 'username late was already registered through /register as client_id 3' },
      { line: 5, reason: expect.stringMatching(/^expected/) },
      { line: 6, reason: 'username team1 already on line 1' },
      // Line 2 did not read: this line's client_id is still team2's in history.
      { line: 7, reason: 'client_id 2 already belongs to team2' },
    ];
    expect(r).toEqual({ added: ['team7'], claimed: [], passwordsChanged: [], restored: [], removed: ['team2'], refused });
    const signIns = async () => ({
      team1: (await s.http.holdings('team1', 'team1pass')).status,
      team2: (await s.http.holdings('team2', 'team2pass')).status,
      team7: (await s.http.holdings('team7', 'team7pass')).status,
      late: (await s.http.holdings('late', 'latepass1')).status,
      lateFromFile: (await s.http.holdings('late', 'latepass2')).status,
      team6: (await s.http.holdings('team6', 'team6pass')).status,
    });
    const expected = { team1: 200, team2: 401, team7: 200, late: 200, lateFromFile: 401, team6: 401 };
    expect(await signIns()).toEqual(expected);
    const health = await s.http.send('GET', '/health');
    expect(health.body.status).toBe('degraded');
    // /health is public: the lines only (a line's words may hold a password's); the operator's page says why.
    expect(health.body.roster_refused_lines).toEqual([2, 4, 5, 6, 7]);
    expect(health.body.problems).toEqual(expect.arrayContaining([expect.stringMatching(/^roster line 4 refused, as if absent until the file is fixed/)]));
    expect(JSON.stringify(health.body)).not.toMatch(/latepass|team6pass|already registered|username late|expected "client_id/);
    // The operator's page lists them above the feed's problems.
    const overview = await s.http.send('GET', OPERATOR_ROUTES.overview, { basic: [OPERATOR.username, OPERATOR.password] });
    expect(overview.body.roster_refused).toEqual(refused);

    // A restart (the supervisor's, after a crash) reads the file the same way and serves: nobody's sign-in changes.
    await s.close();
    const again = await startSystem(s.nats.url, s.cfg);
    cleanups.push(() => again.close());
    expect(again.engine.ready.rosterRefused).toBe(refused.length);
    expect(again.engine.state.rosterRefused).toEqual(refused);
    // Its line refused, team2 converts no more through a request let through before, after a restart too.
    expect(again.engine.state.byUsername.get('team2')!.closed).toBe(true);
    s.http = api(again.url);
    expect(await signIns()).toEqual(expected);

    // Fixed, the file is taken whole and /health says no more of it.
    const fixed = again.engine.roster!.next();
    writeFileSync(s.cfg.accountsFile, `${ROSTER}7 team7 team7pass\n`);
    expect(await fixed).toEqual({ added: [], claimed: [], passwordsChanged: [], restored: ['team2'], removed: [] });
    expect((await s.http.holdings('team2', 'team2pass')).status).toBe(200);
    expect((await s.http.send('GET', '/health')).body.roster_refused_lines).toBeUndefined();
  });

  it('a file that cannot be read changes nothing and is shown on /health until it reads again', async () => {
    const s = await system();
    const gone = s.sys.engine.roster!.next();
    rmSync(s.cfg.accountsFile);
    expect((await gone).error).toMatch(/does not exist/);
    expect((await s.http.holdings('team1', 'team1pass')).status).toBe(200);
    const health = (await s.http.send('GET', '/health')).body;
    expect(health.problems).toEqual(expect.arrayContaining([expect.stringMatching(/^roster file could not be read: the roster read before stays in force/)]));
    const overview = await s.http.send('GET', OPERATOR_ROUTES.overview, { basic: [OPERATOR.username, OPERATOR.password] });
    expect(overview.body.roster_refused).toEqual([{ line: 0, reason: expect.stringMatching(/^accounts file .* does not exist: the roster read before stays in force$/) }]);
    expect((await s.write(`${ROSTER}7 team7 team7pass\n`)).added).toEqual(['team7']);
    expect((await s.http.send('GET', '/health')).body.roster_refused_lines).toBeUndefined();
  });

  it('an engine restarted while the file cannot be read serves with the roster last taken (on /health), and reads the file once it is back', async () => {
    const s = await system();
    await s.write(`${ROSTER}7 team7 team7pass\n`);
    expect(await s.write('1 team1 team1pass\n7 team7 team7pass\n')).toMatchObject({ removed: ['team2'] });
    await s.close();
    rmSync(s.cfg.accountsFile);
    // Before, the start threw a configuration error: under the launcher, not restarted, and the whole system stopped.
    const again = await startSystem(s.nats.url, s.cfg);
    cleanups.push(() => again.close());
    expect(again.engine.state.rosterRefused).toEqual([{ line: 0, reason: expect.stringMatching(/does not exist: the roster last read stays in force until it reads again$/) }]);
    const http = api(again.url);
    const signIns = async () => ({
      team1: (await http.holdings('team1', 'team1pass')).status,
      team2: (await http.holdings('team2', 'team2pass')).status,
      team7: (await http.holdings('team7', 'team7pass')).status,
    });
    expect(await signIns()).toEqual({ team1: 200, team2: 401, team7: 200 });
    expect((await http.send('GET', '/health')).body.problems).toEqual(expect.arrayContaining([expect.stringMatching(/^roster file could not be read/)]));

    const back = again.engine.roster!.next();
    writeFileSync(s.cfg.accountsFile, ROSTER);
    expect(await back).toEqual({ added: [], claimed: [], passwordsChanged: [], restored: ['team2'], removed: ['team7'] });
    expect(await signIns()).toEqual({ team1: 200, team2: 200, team7: 401 });
    expect((await http.send('GET', '/health')).body.roster_refused_lines).toBeUndefined();
  });

  it('on several shards, restarted while the file cannot be read: each serves its own lines as last taken, and none lets another\'s username be registered', async () => {
    const s = await system(2);
    // Client_id 7 is shard 1's, 8 shard 0's; a registration of `gamma` goes to shard 0, of `alpha` to shard 1.
    await s.write(`${ROSTER}7 gamma gammapass\n8 alpha alphapass\n`);
    await s.close();
    rmSync(s.cfg.accountsFile);
    const again = await startSystem(s.nats.url, s.cfg);
    cleanups.push(() => again.close());
    for (const e of again.engines) expect(e.state.rosterRefused).toEqual([{ line: 0, reason: expect.stringMatching(/does not exist/) }]);
    const http = api(again.url);
    for (const [user, pass] of [['gamma', 'gammapass'], ['alpha', 'alphapass'], ['team1', 'team1pass']]) expect((await http.holdings(user!, pass!)).status).toBe(200);
    for (const name of ['gamma', 'alpha']) expect((await http.register(name, 'anotherpass1')).body.error.code).toBe('username_taken');
  });

  it('a line taken out can no longer sign in (as after a start without it), a line put back can, and a changed password counts from the reading', async () => {
    const s = await system();
    expect(await s.write('1 team1 team1pass\n')).toEqual({ added: [], claimed: [], passwordsChanged: [], restored: [], removed: ['team2'] });
    expect((await s.http.holdings('team2', 'team2pass')).status).toBe(401);
    expect((await s.http.holdings('team1', 'team1pass')).status).toBe(200);
    // Put back with the password the hash cache still has: the account (never gone) signs in again.
    expect(await s.write(ROSTER)).toMatchObject({ restored: ['team2'], passwordsChanged: [], removed: [] });
    expect((await s.http.holdings('team2', 'team2pass')).status).toBe(200);
    expect(await s.write('1 team1 newpass11\n2 team2 team2pass\n')).toMatchObject({ passwordsChanged: ['team1'], restored: [], removed: [] });
    expect((await s.http.holdings('team1', 'team1pass')).status).toBe(401);
    expect((await s.http.holdings('team1', 'newpass11')).status).toBe(200);
  });

  it('a gateway that cached a password hears the engine: a changed password or a line taken out counts at the next request, and a conversion let through before changes nothing', async () => {
    // The cache time a gateway runs with (30 s): before, the old password and the line taken out still signed in for up to that long.
    const s = await system(2, 30_000);
    const gw = s.sys.gateway;
    await publishFills(s.nc, fillsFor(2, undyBasket(3)));
    await until(async () => (await s.http.holdings('team2', 'team2pass')).body.holdings?.KNAN === 3, 'team2 to hold the basket');
    expect((await s.http.holdings('team1', 'team1pass')).status).toBe(200);
    expect(gw.auth.bcryptRuns).toBe(2);

    // Live strategies' streams, opened with the passwords about to change: they close, to authenticate again.
    const streams = ['team1', 'team2'].map((team) => {
      const ws = new WebSocket(`${s.sys.url.replace('http', 'ws')}/ws`, { headers: { authorization: `Basic ${Buffer.from(`${team}:${team}pass`).toString('base64')}` } });
      const welcome = new Promise<void>((resolve) => ws.on('message', (d: Buffer) => (JSON.parse(d.toString()) as { type: string }).type === 'welcome' && resolve()));
      const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
      return { welcome, closed };
    });
    await Promise.all(streams.map((st) => st.welcome));

    const heard = gw.signIns.stats.heard;
    // Shard 0's reading: team2 (client_id 2) is its account, team1 shard 1's.
    expect(await s.write('1 team1 newpass11\n')).toMatchObject({ passwordsChanged: [], removed: ['team2'] });
    // Each shard says its own: team1 is shard 1's, team2 shard 0's.
    await until(() => gw.signIns.stats.heard >= heard + 2, 'the gateway to hear both shards');
    expect((await s.http.holdings('team1', 'team1pass')).status).toBe(401);
    expect((await s.http.holdings('team2', 'team2pass')).status).toBe(401);
    expect((await s.http.send('POST', '/create', { basic: ['team2', 'team2pass'], json: { amount: 1 } })).status).toBe(401);
    expect((await s.http.holdings('team1', 'newpass11')).status).toBe(200);
    for (const st of streams) expect(await st.closed).toEqual({ code: 4001, reason: 'sign-in changed: authenticate again' });

    // The client library's stream tries once more with the password it has, and stops when that is refused.
    const statuses: string[] = [];
    const refused = new Promise<string | undefined>((resolve) => {
      const stream = new EtfClient({ url: s.sys.url, username: 'team1', password: 'newpass11' }).stream({
        onStatus: (st, detail) => {
          statuses.push(st);
          if (st === 'refused') resolve(detail);
        },
      });
      cleanups.push(() => stream.close());
    });
    await until(() => statuses.includes('open'), 'the client stream to open');
    await s.write('1 team1 newpass22\n');
    expect(await refused).toBe('authentication failed');
    expect(statuses).toEqual(['open', 'reconnecting', 'refused']);

    // A conversion a gateway let through just before it heard: the engine itself refuses it for a line taken out.
    const team2 = s.sys.engines[0]!.state.accounts.get(2)!;
    const version = team2.version;
    const direct = await gw.engine.call({ op: 'create', clientId: 2, etf: 'UNDY', amount: 1 });
    expect(direct).toMatchObject({ ok: false, error: { code: 'unknown_account' } });
    expect(team2.version).toBe(version);

    // Put back, the account converts again.
    await s.write(ROSTER);
    await until(() => gw.signIns.stats.heard >= heard + 5, 'the gateway to hear the lines put back (one more reading of shard 1 above)');
    expect((await s.http.send('POST', '/create', { basic: ['team2', 'team2pass'], json: { amount: 1 } })).status).toBe(200);
  });

  it('a gateway cut from NATS while a password changed (the news lost to it) checks every cached password again once back', async () => {
    const s = await system(1, 30_000);
    // A gateway that reaches NATS through a link the test can cut.
    const link = await natsLink(s.nats.url);
    cleanups.push(() => link.close());
    const gw = await startGateway(s.cfg, link.url, quietLog);
    cleanups.push(() => gw.close());
    const http = api(`http://127.0.0.1:${gw.port}`);
    expect((await http.holdings('team1', 'team1pass')).status).toBe(200);
    // A stream opened with the password about to change, through that gateway: it never checks the password again.
    const ws = new WebSocket(`ws://127.0.0.1:${gw.port}/ws`, { headers: { authorization: `Basic ${Buffer.from('team1:team1pass').toString('base64')}` } });
    const welcome = new Promise<void>((resolve) => ws.on('message', (d: Buffer) => (JSON.parse(d.toString()) as { type: string }).type === 'welcome' && resolve()));
    const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    await welcome;

    const first = async (type: string) => {
      for await (const st of gw.nc.status()) if (st.type === type) return;
    };
    const [disconnected, reconnected] = [first('disconnect'), first('reconnect')];
    link.cut();
    await disconnected;
    await s.write('1 team1 newpass11\n2 team2 team2pass\n');
    link.mend();
    await reconnected;
    await gw.nc.flush();
    // Before, its cache took the old password for up to 30 s more.
    expect((await http.holdings('team1', 'team1pass')).status).toBe(401);
    expect((await http.holdings('team1', 'newpass11')).status).toBe(200);
    expect(gw.signIns.stats.heard).toBe(0);
    // Before, it went on streaming the account for as long as it stayed open.
    expect(await closed).toEqual({ code: 4001, reason: 'sign-in changed: authenticate again' });
  });

  it('on several engine shards: each takes its own new lines, and none lets another\'s new username be registered', async () => {
    const s = await system(2);
    // Client_id 7 is shard 1's, 8 shard 0's; a registration of `gamma` goes to shard 0, of `alpha` to shard 1: each to the shard without that account.
    await s.write(`${ROSTER}7 gamma gammapass\n8 alpha alphapass\n`);
    expect(s.sys.engines[1]!.state.accounts.get(7)?.username).toBe('gamma');
    expect(s.sys.engines[0]!.state.accounts.get(8)?.username).toBe('alpha');
    expect((await s.http.holdings('gamma', 'gammapass')).status).toBe(200);
    expect((await s.http.holdings('alpha', 'alphapass')).status).toBe(200);
    for (const name of ['gamma', 'alpha']) expect((await s.http.register(name, 'anotherpass1')).body.error.code).toBe('username_taken');

    // A line each shard refuses is shown once; a line without its client_id, which no shard can place, is refused by every shard.
    const r = await s.write(`${ROSTER}7 gamma gammapass\n8 alpha alphapass\nbeta betapass\n9 delta\n`);
    expect(r.refused).toEqual([{ line: 5, reason: 'with 2 engine shards every line needs its client_id' }, { line: 6, reason: expect.stringMatching(/^expected/) }]);
    expect((await s.http.send('GET', '/health')).body.roster_refused_lines).toEqual([5, 6]);
    expect((await s.http.send('GET', OPERATOR_ROUTES.overview, { basic: [OPERATOR.username, OPERATOR.password] })).body.roster_refused).toEqual(r.refused);
    expect((await s.http.holdings('gamma', 'gammapass')).status).toBe(200);
  });

  it('an edit made while the engine started (after it read the file, before it watched it) is read once it serves', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const file = join(dir.path, 'accounts.txt');
    writeFileSync(file, ROSTER);
    const readAt = rosterFileStamp(file);
    writeFileSync(file, `${ROSTER}7 team7 team7pass\n`);
    const state = emptyState();
    const watch = new RosterWatch({
      file,
      instruments: loadBaskets(undefined),
      shard: 0,
      shards: 1,
      state,
      decided: (events) => events.forEach((e) => applyEvent(state, e)),
      hashes: (lines) => rosterPasswordHashes(lines, 4),
      key: new CredentialsKey(randomBytes(32), 'test-key'),
      signInChanged: () => {},
      saveInForce: () => {},
      usernames: () => {},
      log: quietLog,
      // Far beyond the test: only the look at start can see the edit.
      intervalMs: 60_000,
      readAt,
    });
    cleanups.push(() => watch.stop());
    const read = watch.next();
    watch.start();
    expect((await read).added).toEqual(['team1', 'team2', 'team7']);
  });
});
