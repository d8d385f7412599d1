import { afterAll, expect, it } from 'vitest';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startGateway } from '../src/gateway/server.js';
import { api, killProcess, quietLog, spawnEngine, startTestNats, tempDir, testConfig } from './helpers/system.js';

/**
 * Roster passwords are bcrypt-hashed once, not at every start: a start reuses
 * the hash of every password unchanged since the last one, and hashes again
 * only what changed (which then logs in, and the old password no longer does).
 */
const dir = tempDir();
const cleanups: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  dir.remove();
});

it('hashes each roster password once, and again only when it changes', async () => {
  const nats = await startTestNats();
  cleanups.push(() => nats.remove(), () => nats.stop());
  const roster = (p2: string) => `1 team1 team1pass\n2 team2 ${p2}\n3 team3 team3pass\n`;
  const cfg = testConfig(dir.path, { roster: roster('team2pass') });

  const start = async () => {
    const engine = await spawnEngine(nats.url, cfg);
    return { engine, hashes: engine.ready.rosterHashes as { hashed: number; reused: number } };
  };
  let { engine, hashes } = await start();
  expect(hashes).toEqual({ hashed: 3, reused: 0 });
  expect(statSync(join(dir.path, 'roster-hashes.json')).mode & 0o777).toBe(0o600);
  await killProcess(engine, 'SIGTERM');

  ({ engine, hashes } = await start());
  expect(hashes).toEqual({ hashed: 0, reused: 3 });
  await killProcess(engine, 'SIGTERM');

  writeFileSync(cfg.accountsFile, roster('a-new-password'));
  ({ engine, hashes } = await start());
  cleanups.push(() => killProcess(engine));
  expect(hashes).toEqual({ hashed: 1, reused: 2 });
  const gateway = await startGateway(cfg, nats.url, quietLog);
  cleanups.push(() => gateway.close());
  const http = api(`http://127.0.0.1:${gateway.port}`);
  expect((await http.holdings('team2', 'a-new-password')).status).toBe(200);
  expect((await http.holdings('team2', 'team2pass')).status).toBe(401);
  expect((await http.holdings('team1', 'team1pass')).status).toBe(200);
});
