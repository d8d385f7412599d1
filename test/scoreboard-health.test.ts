import { afterAll, beforeAll, expect, it } from 'vitest';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { OPERATOR_ROUTES } from '../proto/operator.js';
import { api, startSystem, startTestNats, tempDir, testConfig, until, type TestSystem } from './helpers/system.js';

/**
 * NDFEX grades from the scoreboard file: an engine that cannot write it serves
 * on (its lines are retried), and /health must say so, not only the engine log.
 */
let nats: Awaited<ReturnType<typeof startTestNats>>;
let dir: ReturnType<typeof tempDir>;
let sys: TestSystem;
let blocker: string;
const OPERATOR = { username: 'instructor', password: 'instructorpass' };

beforeAll(async () => {
  nats = await startTestNats();
  dir = tempDir();
  // A file where the scoreboard's directory should be: no write can reach it until it goes.
  blocker = join(dir.path, 'exchange-share');
  writeFileSync(blocker, 'not a directory');
  sys = await startSystem(nats.url, testConfig(dir.path, { scoreboardFile: join(blocker, 'conversions.log'), operator: OPERATOR }));
});

afterAll(async () => {
  await sys?.close();
  await nats?.stop();
  nats?.remove();
  dir?.remove();
});

it('shows a scoreboard file that cannot be written on /health and the operator page until it is written', async () => {
  const http = api(sys.url);
  const failing = await until(async () => {
    const h = await http.send('GET', '/health');
    return h.body.scoreboard_failing && h;
  }, 'the scoreboard failure on /health');
  expect(failing.status).toBe(200); // teams are still served
  expect(failing.body.status).toBe('degraded');
  expect(failing.body.scoreboard_failing).toMatchObject({ error: expect.stringMatching(/ENOTDIR|EEXIST|not a directory|file already exists/), since: expect.any(Number) });
  expect(failing.body.problems).toContainEqual(expect.stringMatching(/^the scoreboard file \(NDFEX's record of conversions\) has not been written since .*: .*the engine keeps trying/));

  const overview = await http.send('GET', OPERATOR_ROUTES.overview, { basic: [OPERATOR.username, OPERATOR.password] });
  expect(overview.status).toBe(200);
  expect(overview.body.scoreboard_failing).toEqual(failing.body.scoreboard_failing);
  expect(overview.body.unread).toBeUndefined();

  rmSync(blocker);
  const written = await until(
    async () => {
      const h = await http.send('GET', '/health');
      return h.body.scoreboard_failing === undefined && h;
    },
    'the scoreboard written again',
    20_000,
  );
  expect((written.body.problems ?? []).join('\n')).not.toMatch(/scoreboard/);
  expect(existsSync(join(blocker, 'conversions.log'))).toBe(true);
  expect((await http.send('GET', OPERATOR_ROUTES.overview, { basic: [OPERATOR.username, OPERATOR.password] })).body.scoreboard_failing).toBeUndefined();
});
