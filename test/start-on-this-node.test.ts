import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { PROJECT_ROOT } from '../src/config/config.js';
import { api, tempDir, until } from './helpers/system.js';
import { launcherEnv, runLauncher, type LauncherRun } from './helpers/launcher.js';
import { uwsLoads } from './helpers/servers.js';

/**
 * What a new user does after `npm ci && npm start`, on whichever Node runs
 * this file (CI runs it on this machine's Node and on Node 22, issue 20): the
 * system comes up on the HTTP server this Node has (uWS where it loads, else
 * node:http with the fallback's one log line), a team registers, gets a
 * basket (`npm run fill`), creates UNDY, and sees the creation on /ws.
 */
// HTTP_SERVER=uws|node runs the file on that server, as every test file; unset or auto, as npm start.
const asked = process.env.HTTP_SERVER === 'uws' || process.env.HTTP_SERVER === 'node' ? process.env.HTTP_SERVER : null;
const expected = asked ?? (uwsLoads ? 'uws' : 'node');
const fallsBack = !asked && !uwsLoads;

const dir = tempDir('etf-start-node-');
let run: LauncherRun | undefined;
afterAll(async () => {
  if (run && run.child.exitCode === null && run.child.signalCode === null) {
    run.child.kill('SIGKILL');
    await run.closed;
  }
  dir.remove();
});

describe(`npm start on Node ${process.version}`, () => {
  it(`comes up on ${expected}${fallsBack ? ' (the fallback, said in one line)' : ''}, registers, converts and streams, and stops cleanly`, async () => {
    const accounts = join(dir.path, 'accounts.txt');
    writeFileSync(accounts, '1 team1 team1pass\n');
    // No simulator here (as beside a real exchange): registration is open only when asked for.
    const env = await launcherEnv(join(dir.path, 'data'), accounts, { REGISTRATION: 'open' });
    run = runLauncher(env);
    const listening = await run.waitForLine((l) => l.msg === 'gateway listening', 'gateway listening', 120_000);
    expect(listening.server).toBe(expected);
    const fallback = run.lines.filter((l) => /uWebSockets\.js does not load/.test(l.msg ?? ''));
    expect(fallback).toHaveLength(fallsBack ? 1 : 0);
    await run.waitForLine((l) => l.msg === 'engine ready', 'engine ready', 120_000);

    const base = `http://127.0.0.1:${env.HTTP_PORT}`;
    const http = api(base);
    await until(async () => (await fetch(`${base}/health`)).status === 200, '/health 200', 60_000);
    const reg = await http.register('newteam', 'password1');
    expect(reg.status).toBe(200);
    const clientId = reg.body.client_id as number;

    const ws = new WebSocket(`${base.replace('http', 'ws')}/ws`, { headers: { authorization: `Basic ${Buffer.from('newteam:password1').toString('base64')}` } });
    const seen: string[] = [];
    const created = new Promise<void>((resolve) =>
      ws.on('message', (data) => {
        const m = JSON.parse(String(data)) as { type: string; cause?: string };
        seen.push(m.cause ? `${m.type}:${m.cause}` : m.type);
        if (m.type === 'delta' && m.cause === 'create') resolve();
      }),
    );
    const snapshot = until(() => seen.includes('snapshot'), 'the /ws snapshot');
    await snapshot;

    // `npm run fill -- --client N --basket --quantity 2`, as the README shows: the launcher's NATS users are in DATA_DIR.
    execFileSync(process.execPath, [join(PROJECT_ROOT, 'dist/src/tools/publish-fill.js'), '--client', String(clientId), '--basket', '--quantity', '2'], {
      env: { ...process.env, ...env },
      stdio: 'ignore',
    });
    await until(async () => ((await http.holdings('newteam', 'password1')).body.holdings.BDIN ?? 0) === 2, 'the basket fills applied');
    const create = await http.create('newteam', 'password1', 2, 'UNDY');
    expect(create.status).toBe(200);
    expect(create.body.holdings.UNDY).toBe(2);
    await created;
    expect(seen.slice(0, 2)).toEqual(['welcome', 'snapshot']);
    ws.close();

    process.kill(run.child.pid!, 'SIGINT');
    expect(await run.exited).toBe(0);
    await run.closed;
  }, 300_000); // nats-server and five services starting on a loaded machine
});
