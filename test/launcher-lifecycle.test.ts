import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { api, tempDir, until } from './helpers/system.js';
import { launcherEnv, runLauncher, type LauncherRun } from './helpers/launcher.js';
import { portIsFree } from '../src/shared/ports.js';

const ROSTER = '1 team1 team1pass\n2 team2 team2pass\n';
const dirs: ReturnType<typeof tempDir>[] = [];
const runs: LauncherRun[] = [];
afterAll(async () => {
  for (const r of runs) {
    if (r.child.exitCode !== null || r.child.signalCode !== null) continue;
    try {
      process.kill(-r.child.pid!, 'SIGKILL');
    } catch {
      // Its group is gone already.
    }
  }
  for (const d of dirs) d.remove();
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Clearing-feed losses the bridge logs: a gap inside the session, or fills sent before it joined. */
const lossLines = (run: LauncherRun) => run.lines.filter((l) => /clearing seq gap|late join on the clearing feed/.test(l.msg ?? ''));

describe('npm start and its stops, with the simulator', () => {
  it('Ctrl-C three times, then SIGINT and SIGTERM to npm alone: each stop is clean (in order, final snapshot saved, nothing left), each start has 0 gaps', async () => {
    const d = tempDir('etf-lifecycle-');
    dirs.push(d);
    const accounts = join(d.path, 'accounts.txt');
    writeFileSync(accounts, ROSTER);
    // The launcher's own TMPDIR: whatever it or a service leaves in temporary folders shows here.
    const tmp = join(d.path, 'tmp');
    mkdirSync(tmp);
    const dataDir = join(d.path, 'data');
    const env = await launcherEnv(dataDir, accounts, { NDFEX_SIMULATOR: 'on', NDFEX_SIM_RATE: '200', TMPDIR: tmp });
    const http = api(`http://127.0.0.1:${env.HTTP_PORT}`);
    // A terminal's Ctrl-C signals the whole foreground group (npm, and whatever it started in that group).
    const ctrlC = { what: 'Ctrl-C', stop: (r: LauncherRun) => process.kill(-r.child.pid!, 'SIGINT') };
    const stops: Array<{ what: string; stop: (r: LauncherRun) => void }> = [
      ctrlC,
      ctrlC,
      ctrlC,
      { what: 'SIGINT to npm', stop: (r) => process.kill(r.child.pid!, 'SIGINT') },
      { what: 'SIGTERM to npm', stop: (r) => process.kill(r.child.pid!, 'SIGTERM') },
    ];
    for (const [i, { what, stop }] of stops.entries()) {
      const run = runLauncher(env, { npm: true });
      runs.push(run);
      // The first `npm start` compiles whatever changed since the last build (all of it after a checkout): give it time.
      const ready = await run.waitForLine((l) => l.msg === 'engine ready', `engine ready (start ${i + 1})`, i === 0 ? 240_000 : 60_000);
      // The previous stop saved the engine's final snapshot: this start replays no journal past it.
      if (i > 0) expect(ready.snapshot?.journalSeq, `snapshot after stop ${i} (${stops[i - 1]!.what})`).toBe(ready.journalSeq);
      await until(async () => (await http.send('GET', '/health').catch(() => null))?.body.engine === true, 'the system to be healthy', 30_000);
      // Something new in the journal every run, so the next start proves this stop's snapshot.
      expect((await http.register(`newteam${i}`, 'newteam-password')).status).toBe(200);
      const health = await until(async () => {
        const h = (await http.send('GET', '/health')).body;
        return h.feed?.clearing?.messages > 50 ? h : undefined;
      }, 'the feed bridge to hear the simulator', 30_000);
      expect({ start: i + 1, gaps: health.feed.clearing.gaps, missedBeforeJoin: health.feed.clearing.missed_before_join ?? 0, logged: lossLines(run) }).toEqual({
        start: i + 1,
        gaps: 0,
        missedBeforeJoin: 0,
        logged: [],
      });

      const pids = [...new Set(run.lines.map((l) => l.pid).filter((p): p is number => typeof p === 'number'))];
      expect(pids.length).toBeGreaterThanOrEqual(6); // launcher, engine, gateway, pricing, feed, simulator
      const from = run.lines.length;
      stop(run);
      expect(await run.exited, `npm's exit code after ${what}`).toBe(0);
      await run.closed;
      const stopLines = run.lines.slice(from);
      expect(stopLines.filter((l) => l.level >= 50 || /JetStream unavailable|JetStreamNotEnabled/.test(JSON.stringify(l)))).toEqual([]);
      expect(stopLines.some((l) => l.msg === 'stopping')).toBe(true);
      // Everything it started is gone: no process, nats-server's port free, nothing in temporary folders.
      expect(pids.filter(alive), `processes left after ${what}`).toEqual([]);
      expect(await portIsFree('127.0.0.1', Number(env.NATS_PORT))).toBe(true);
      expect(await portIsFree('127.0.0.1', Number(env.HTTP_PORT))).toBe(true);
      expect(readdirSync(tmp)).toEqual([]);
      expect(existsSync(join(dataDir, 'tmp'))).toBe(false);
    }
  }, 600_000);

  it('a launcher killed outright leaves nothing serving: its services stop by themselves, the next start stops the nats-server it left', async () => {
    const d = tempDir('etf-lifecycle-');
    dirs.push(d);
    const accounts = join(d.path, 'accounts.txt');
    writeFileSync(accounts, ROSTER);
    const dataDir = join(d.path, 'data');
    const env = await launcherEnv(dataDir, accounts);
    const http = api(`http://127.0.0.1:${env.HTTP_PORT}`);
    const healthy = () => until(async () => (await http.send('GET', '/health').catch(() => null))?.body.engine === true, 'the system to be healthy', 30_000);
    let run = runLauncher(env);
    runs.push(run);
    await healthy();
    const launcher = run.child.pid!;
    // /health answers once the engine and gateway are up; pricing and the feed bridge may log their first line after.
    const services = await until(() => {
      const pids = [...new Set(run.lines.map((l) => l.pid).filter((p): p is number => typeof p === 'number' && p !== launcher))];
      return pids.length >= 4 ? pids : undefined; // engine, gateway, pricing, feed
    }, 'every service to have logged', 30_000);
    run.child.kill('SIGKILL');
    await run.exited;
    await until(() => services.every((p) => !alive(p)), 'the services to notice their launcher is gone and stop', 15_000);
    expect(await portIsFree('127.0.0.1', Number(env.HTTP_PORT))).toBe(true);

    // What a crashed service left in its temporary folder (the services' TMPDIR is DATA_DIR/tmp) is gone at the next start.
    writeFileSync(join(dataDir, 'tmp', 'left-by-a-crash'), 'x');
    // nats-server (its own process group, nothing to watch with) is still up on NATS_PORT: the next start stops it first.
    run = runLauncher(env);
    runs.push(run);
    await run.waitForLine((l) => l.msg === 'stopped a nats-server left running by a launcher that was killed', 'the orphan nats-server stopped');
    await healthy();
    expect(readdirSync(join(dataDir, 'tmp'))).toEqual([]);
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(0);
    expect(await portIsFree('127.0.0.1', Number(env.NATS_PORT))).toBe(true);
  }, 120_000);
});
