import { describe, expect, it } from 'vitest';
import { buy, quietLog, testConfig, undyBasket, useSystem } from './helpers/system.js';
import { startEngine } from '../src/engine/service.js';
import { EngineClient } from '../src/shared/engine-client.js';
import { consistencyCheck } from '../src/engine/check.js';
import { loadBaskets } from '../src/config/baskets.js';
import { shardOfClient, shardOfUsername } from '../proto/shards.js';
import { exportAudit } from '../src/engine/audit-export.js';

/**
 * Two engine shards and two gateways on one nats-server: each shard owns the
 * client_ids of its residue, a username exists once across shards, operator
 * commands reach every shard, and the consistency check rebuilds each shard
 * from its own journal. Requests alternate between the two gateways.
 */
const SHARDS = 2;
const ROSTER = '1 team1 team1pass\n2 team2 team2pass\n';
const f = useSystem({ engine: { shards: SHARDS }, roster: ROSTER }, 2);

describe('two engine shards behind two gateways', () => {
  it('keeps each team on its own shard, fills included', async () => {
    await buy(f.nc, 1, undyBasket(3));
    await buy(f.nc, 2, undyBasket(5));
    expect((await f.http.create('team1', 'team1pass', 2, 'UNDY')).status).toBe(200);
    expect((await f.http.create('team2', 'team2pass', 4, 'UNDY')).status).toBe(200);
    expect((await f.http.holdings('team1', 'team1pass')).body.holdings.UNDY).toBe(2);
    expect((await f.http.holdings('team2', 'team2pass')).body.holdings.UNDY).toBe(4);
    // Each account lives in exactly one shard's state.
    const [s0, s1] = f.sys.engines.map((e) => e.state);
    expect([s0!.accounts.has(1), s1!.accounts.has(1), s0!.accounts.has(2), s1!.accounts.has(2)]).toEqual([false, true, true, false]);
  });

  it('registers a username once, however many gateways race for it', async () => {
    const results = await Promise.all(Array.from({ length: 10 }, () => f.http.register('racer', 'racer-password')));
    const ok = results.filter((r) => r.status === 200);
    expect(ok).toHaveLength(1);
    for (const r of results.filter((r) => r.status !== 200)) expect(r.body.error.code).toBe('username_taken');
    // Its client_id belongs to the shard its name hashes to, so the id routes back there.
    const id = ok[0]!.body.client_id as number;
    expect(shardOfClient(id, SHARDS)).toBe(shardOfUsername('racer', SHARDS));
    await buy(f.nc, id, undyBasket(1));
    expect((await f.http.create('racer', 'racer-password', 1, 'UNDY')).status).toBe(200);
  });

  it('refuses a roster username on every shard, whichever its name hashes to', async () => {
    for (const name of ['team1', 'team2']) {
      const r = await f.http.register(name, 'another-password');
      expect(r.status).toBe(400);
      expect(r.body.error.code).toBe('username_taken');
    }
  });

  it('halts and resumes every shard with one operator command', async () => {
    const engine = new EngineClient(f.nc, 5000, { shards: SHARDS });
    try {
      expect((await engine.call({ op: 'halt', etf: null, reason: 'test', by: 'op' })).ok).toBe(true);
      await buy(f.nc, 2, undyBasket(1));
      for (const [u, p] of [['team1', 'team1pass'], ['team2', 'team2pass']] as const) {
        const r = await f.http.create(u, p, 1, 'UNDY');
        expect(r.body.error?.code).toBe('halted');
      }
      expect((await engine.call({ op: 'resume', etf: null, by: 'op' })).ok).toBe(true);
      expect((await f.http.create('team2', 'team2pass', 1, 'UNDY')).status).toBe(200);
    } finally {
      engine.close();
    }
  });

  it('answers /health and passes the consistency check over both shards', async () => {
    expect((await f.http.send('GET', '/health')).status).toBe(200);
    const admin = new EngineClient(f.nc, 5000, { admin: true, shards: SHARDS });
    try {
      const dump = await admin.call({ op: 'dump' });
      if (!dump.ok) throw new Error(dump.error.message);
      expect(dump.result.shards).toHaveLength(SHARDS);
      expect(dump.result.accounts.map((a) => a.username)).toEqual(expect.arrayContaining(['team1', 'team2', 'racer']));
      const report = await consistencyCheck(f.nc, dump.result, loadBaskets(undefined), quietLog);
      expect(report.mismatches).toEqual([]);
      expect(report.conservation).toEqual([]);
      expect(report.ok).toBe(true);
    } finally {
      admin.close();
    }
  });

  it('exports every shard\'s audit trail, operator commands once', async () => {
    const lines: Record<string, unknown>[] = [];
    await exportAudit(f.nc, loadBaskets(undefined), (l) => lines.push(JSON.parse(l) as Record<string, unknown>), SHARDS);
    expect(lines.filter((l) => l.kind === 'halt')).toHaveLength(1);
    expect(lines.filter((l) => l.kind === 'resume')).toHaveLength(1);
    const creates = lines.filter((l) => l.kind === 'create' && l.status === 'accepted');
    // team1 (shard 1), team2 (shard 0) and the registered racer each created.
    expect(new Set(creates.map((l) => l.client_id)).size).toBe(3);
  });

  it('an operator command reaches a shard that was down when it was sent, once it is back', async () => {
    const cfg = { ...testConfig(f.dir.path, { engine: { shards: SHARDS }, roster: ROSTER }), engine: { shards: SHARDS, shard: 1 } };
    await f.sys.engines[1]!.close();
    // Short attempts, a long window: the first attempt reaches no shard-1 engine, a later one does.
    const engine = new EngineClient(f.nc, 500, { shards: SHARDS, resendMs: 60_000 });
    try {
      const halted = engine.call({ op: 'halt', etf: null, reason: 'while shard 1 restarts', by: 'op' });
      f.sys.engines[1] = await startEngine(cfg, f.nats.url, quietLog, (err) => {
        throw err;
      });
      expect(await halted).toMatchObject({ ok: true });
      for (const s of f.sys.engines) expect(s.state.halts.size).toBe(1);
      expect((await engine.call({ op: 'resume', etf: null, by: 'op' })).ok).toBe(true);
      for (const s of f.sys.engines) expect(s.state.halts.size).toBe(0);
    } finally {
      engine.close();
    }
  });
});

describe('an operator basket change with two engine shards', () => {
  const f = useSystem({ engine: { shards: SHARDS }, roster: ROSTER, operator: { username: 'instructor', password: 'instructorpass' } });

  it('exports a conversion on shard 1 made on the new version, with one basket line per version', async () => {
    expect(shardOfClient(1, SHARDS)).toBe(1);
    await buy(f.nc, 1, { 3: 10 });
    const set = await f.http.send('POST', '/operator/api/basket', { basic: ['instructor', 'instructorpass'], json: { etf_name: 'UNDY', components: { KNAN: 3 } } });
    expect(set.status).toBe(200);
    const created = await f.http.create('team1', 'team1pass', 2, 'UNDY');
    expect(created.body).toMatchObject({ basket_version: 1, deltas: { KNAN: -6, UNDY: 2 } });

    // Shard 1's journal names version 1, defined there by the basket event it skips writing.
    const lines: Record<string, unknown>[] = [];
    await exportAudit(f.nc, loadBaskets(undefined), (l) => lines.push(JSON.parse(l) as Record<string, unknown>), SHARDS);
    expect(lines.find((l) => l.kind === 'create' && l.client_id === 1)).toMatchObject({
      status: 'accepted',
      deltas: [
        { ticker: 'KNAN', quantity: -6 },
        { ticker: 'UNDY', quantity: 2 },
      ],
    });
    expect(lines.filter((l) => l.kind === 'basket').map((l) => (l.basket as { version: number }).version)).toEqual([1]);
  });
});

describe('an operator basket change resent after a 503 with two engine shards', () => {
  // Short requests: a write a shard does not answer is a 503 after three of them (the resend window).
  const OPERATOR = { username: 'instructor', password: 'instructorpass' };
  const overrides = { engine: { shards: SHARDS }, roster: ROSTER, operator: OPERATOR, requestTimeoutMs: 1_000 };
  const f = useSystem(overrides);
  const setBasket = (json: Record<string, unknown>) => f.http.send('POST', '/operator/api/basket', { basic: [OPERATOR.username, OPERATOR.password], json });
  /** A shard's last UNDY version: its number, and the time it takes effect. */
  const last = (shard: number) => {
    const v = f.sys.engines[shard]!.state.baskets.get('UNDY')?.at(-1);
    return v ? { version: v.version, from: v.from } : null;
  };
  /** Stops a shard's engine, runs `fn`, and starts it again before anything is asserted (a failure leaves the system whole). */
  async function whileDown<T>(shard: number, fn: () => Promise<T>): Promise<T> {
    await f.sys.engines[shard]!.close();
    try {
      return await fn();
    } finally {
      f.sys.engines[shard] = await startEngine({ ...testConfig(f.dir.path, overrides), engine: { shards: SHARDS, shard } }, f.nats.url, quietLog, (err) => {
        throw err;
      });
    }
  }

  it.each([1, 0])('changes no shard\'s basket while shard %i does not answer (503), and every shard\'s alike once it does', async (down) => {
    const before = [last(0), last(1)];
    const components = { KNAN: down === 1 ? 3 : 4 };
    const first = await whileDown(down, () => setBasket({ etf_name: 'UNDY', components }));
    expect(first.status).toBe(503);
    // Before: the shard that answered took the version at the first request's time, which the retry could not give the other.
    expect([last(0), last(1)]).toEqual(before);
    expect((await setBasket({ etf_name: 'UNDY', components })).status).toBe(200);
    expect(last(0)).toEqual(last(1));
    expect(last(0)!.version).toBe((before[0]?.version ?? 0) + 1);
  });

  it.each([1, 0])('gives shard %i, which missed a change another shard took, that change\'s time when the operator sends it again', async (late) => {
    const on = 1 - late;
    const components = { KNAN: late === 1 ? 5 : 6 };
    // The change as the gateway sent it before it asked the shards first: it reaches one shard, and the other does not answer.
    const first = await whileDown(late, async () => {
      const engine = new EngineClient(f.nc, 300, { shards: SHARDS, resendMs: 600 });
      try {
        return await engine.call({ op: 'set_basket', etf: 'UNDY', components, from: Date.now(), by: OPERATOR.username });
      } finally {
        engine.close();
      }
    });
    expect(first).toMatchObject({ ok: false, error: { code: 'engine_unavailable' } });
    const taken = last(on)!;
    expect(last(late)!.version).toBe(taken.version - 1);
    // The retry, its components spelled another way; for shard 0 it names a later time of its own, which the shard
    // holding the version ignores (no new version), and so must the shard that missed it.
    const again = await setBasket({ etf_name: 'UNDY', components: { knan: components.KNAN }, ...(late === 0 ? { from: Date.now() + 60_000 } : {}) });
    expect(again.status).toBe(200);
    // Before: the late shard took the retry's time, the other kept the first's: between the two, each shard had
    // another basket in force (and published its own versions to etf_baskets).
    expect([last(on), last(late)]).toEqual([taken, taken]);
  });
});
