import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { api, buy, killProcess, startTestNats, tempDir, until } from './helpers/system.js';
import { connectNats } from '../src/shared/nats.js';
import { jetstreamManager } from '@nats-io/jetstream';
import { FILL_STREAM, SESSION_SUBJECT } from '../proto/subjects.js';
import { launcherEnv, runLauncher, type LauncherRun } from './helpers/launcher.js';
import { playExchange } from './helpers/feed.js';
import { PROJECT_ROOT } from '../src/config/config.js';

const ROSTER = '1 team1 team1pass\n2 team2 team2pass\n';
const dirs: ReturnType<typeof tempDir>[] = [];
const runs: LauncherRun[] = [];
afterAll(async () => {
  for (const r of runs) await killProcess(r.child, 'SIGINT');
  for (const d of dirs) d.remove();
});

function workspace(roster = ROSTER) {
  const d = tempDir('etf-launcher-');
  dirs.push(d);
  const accounts = join(d.path, 'accounts.txt');
  writeFileSync(accounts, roster);
  return { dir: d.path, accounts };
}

/** Runs the launcher until it exits by itself; returns its exit code and log lines. */
async function runToExit(env: NodeJS.ProcessEnv) {
  const run = runLauncher(env);
  runs.push(run);
  const code = await run.exited;
  return { code, lines: run.lines };
}

describe('configuration errors: one line naming the file, line or variable; exit 2; nothing started', () => {
  const fatalOf = (lines: Record<string, any>[]) => lines.filter((l) => l.level === 60 || l.msg?.includes('configuration error'));
  const expectOneLine = (r: { code: number | null; lines: Record<string, any>[] }, pattern: RegExp) => {
    expect(r.code).toBe(2);
    const fatal = fatalOf(r.lines);
    expect(fatal).toHaveLength(1);
    expect(fatal[0]!.msg).toMatch(pattern);
    expect(fatal[0]!.msg).not.toContain('\n');
    expect(r.lines.some((l) => /started nats-server|system starting/.test(l.msg ?? ''))).toBe(false);
    expect(r.lines.some((l) => /\n\s+at /.test(JSON.stringify(l)))).toBe(false);
  };

  it('a malformed accounts line', async () => {
    const w = workspace('1 team1 team1pass\nthis line is bad\n');
    expectOneLine(await runToExit(await launcherEnv(w.dir, w.accounts)), /accounts file .*accounts\.txt, line 2:/);
  });

  it('a missing accounts file', async () => {
    const w = workspace();
    expectOneLine(await runToExit(await launcherEnv(w.dir, join(w.dir, 'nope.txt'))), /accounts file .*nope\.txt does not exist/);
  });

  it('a baskets file that is not JSON, or names an unknown symbol', async () => {
    const w = workspace();
    const baskets = join(w.dir, 'baskets.json');
    writeFileSync(baskets, '{"etfs": [');
    expectOneLine(await runToExit(await launcherEnv(w.dir, w.accounts, { BASKETS_FILE: baskets })), /baskets file .*baskets\.json: not valid JSON/);
    writeFileSync(baskets, JSON.stringify({ etfs: [{ name: 'TECH', symbol: 20, components: { NOPE: 1 } }] }));
    expectOneLine(await runToExit(await launcherEnv(w.dir, w.accounts, { BASKETS_FILE: baskets })), /baskets file .*baskets\.json: ETF TECH: unknown component symbol NOPE/);
  });

  it('engine shards that do not fit the data directory or the roster', async () => {
    const w = workspace();
    writeFileSync(join(w.dir, 'engine-shards'), '2\n');
    expectOneLine(await runToExit(await launcherEnv(w.dir, w.accounts)), /holds the journals of 2 engine shard\(s\): ENGINE_SHARDS=1 would leave accounts/);
    const v = workspace('team1 team1pass\n');
    expectOneLine(await runToExit(await launcherEnv(v.dir, v.accounts, { ENGINE_SHARDS: '2' })), /accounts\.txt, line 1: with 2 engine shards every line needs its client_id/);
  });

  it('a port in use names its variable: HTTP_PORT, NATS_PORT', async () => {
    const w = workspace();
    const held = createServer();
    await new Promise<void>((r) => held.listen(0, '127.0.0.1', r));
    const port = String((held.address() as AddressInfo).port);
    try {
      expectOneLine(await runToExit(await launcherEnv(w.dir, w.accounts, { HTTP_PORT: port })), new RegExp(`HTTP_PORT=${port} on 127\\.0\\.0\\.1: port in use`));
      const r = await runToExit(await launcherEnv(w.dir, w.accounts, { NATS_PORT: port }));
      expectOneLine(r, new RegExp(`NATS_PORT=${port}: port in use`));
      // Not nats-server's start-up banner.
      expect(r.lines.some((l) => /Starting nats-server/.test(JSON.stringify(l)))).toBe(false);
    } finally {
      held.close();
    }
  });

  it('a value out of range blames its variable, not the config file', async () => {
    const w = workspace();
    for (const [name, value] of [['ENGINE_SHARDS', '0'], ['MAX_AMOUNT', '-5'], ['HTTP_PORT', '99999']] as const) {
      const r = await runToExit(await launcherEnv(w.dir, w.accounts, { [name]: value }));
      expectOneLine(r, new RegExp(`${name}="${value}": too (small|big)`, 'i'));
      expect(fatalOf(r.lines)[0]!.msg).not.toContain('config file');
    }
  });

  it('LOG_FORMAT that is neither json nor pretty', async () => {
    const w = workspace();
    expectOneLine(await runToExit(await launcherEnv(w.dir, w.accounts, { LOG_FORMAT: 'xml' })), /LOG_FORMAT="xml": expected json or pretty/);
  });

  it('a DATA_DIR that cannot be created (Node 20 spins forever on a recursive mkdir under /proc)', async () => {
    const w = workspace();
    expectOneLine(await runToExit(await launcherEnv('/proc/nope', w.accounts)), /DATA_DIR=\/proc\/nope cannot be used as the data directory: ENOENT/);
  }, 20_000);

  it('the shard guard compares ENGINE_SHARDS with what the data directory recorded, also when it is set', async () => {
    const w = workspace();
    writeFileSync(join(w.dir, 'engine-shards'), '2\n');
    for (const shards of ['1', '3']) {
      expectOneLine(await runToExit(await launcherEnv(w.dir, w.accounts, { ENGINE_SHARDS: shards })), new RegExp(`holds the journals of 2 engine shard\\(s\\): ENGINE_SHARDS=${shards} would leave accounts`));
    }
  });

  it('a variable that is not a number, or not a choice', async () => {
    const w = workspace();
    expectOneLine(await runToExit(await launcherEnv(w.dir, w.accounts, { HTTP_PORT: 'abc' })), /HTTP_PORT="abc" is not a whole number/);
    expectOneLine(await runToExit(await launcherEnv(w.dir, w.accounts, { NDFEX_RESTART_POLICY: 'sometimes' })), /NDFEX_RESTART_POLICY/);
    expectOneLine(await runToExit(await launcherEnv(w.dir, w.accounts, { NDFEX_SIMULATOR: 'maybe' })), /NDFEX_SIMULATOR="maybe"/);
    expectOneLine(await runToExit(await launcherEnv(w.dir, w.accounts, { NDFEX_STANDBY: 'twice' })), /NDFEX_STANDBY="twice": expected on or off/);
  });
});

describe('the launcher keeps the system up', () => {
  it('NATS_URL (an existing server) with a fresh DATA_DIR: comes up, no stack trace', async () => {
    const w = workspace();
    const nats = await startTestNats();
    try {
      const dataDir = join(w.dir, 'fresh/data');
      const env = await launcherEnv(dataDir, w.accounts, { NATS_URL: nats.url });
      const http = api(`http://127.0.0.1:${env.HTTP_PORT}`);
      const run = runLauncher(env);
      runs.push(run);
      await until(async () => (await http.send('GET', '/health').catch(() => null))?.body.engine === true, 'the system to be healthy', 30_000);
      expect(existsSync(join(dataDir, 'engine-shards'))).toBe(true);
      run.child.kill('SIGINT');
      expect(await run.exited).toBe(0);
      expect(run.lines.filter((l) => /\n\s+at |ENOENT/.test(JSON.stringify(l)))).toEqual([]);
    } finally {
      await nats.stop();
      nats.remove();
    }
  });


  it.each([
    ['an exchange heard on the feeds (NDFEX_SIMULATOR=auto)', 'auto'],
    ['the simulator turned off for one (NDFEX_SIMULATOR=off)', 'off'],
  ] as const)('beside %s: no simulator, and /register closed unless REGISTRATION says otherwise', async (_what, simulator) => {
    const w = workspace();
    const env = await launcherEnv(w.dir, w.accounts, { NDFEX_SIMULATOR: simulator });
    const group = (v: string) => ({ group: v.split(':')[0]!, port: Number(v.split(':')[1]) });
    // An exchange's heartbeats on the market-data group (the launcher listens for them only under auto).
    const ex = await playExchange({ clearing: group(env.NDFEX_CLEARING_ADDR!), marketData: group(env.NDFEX_MD_ADDR!) });
    try {
      const http = api(`http://127.0.0.1:${env.HTTP_PORT}`);
      const run = runLauncher(env);
      runs.push(run);
      expect((await run.waitForLine((l) => l.msg === 'system starting: Ctrl-C stops it', 'the system starting')).exchange).toBe('NDFEX on the multicast feeds');
      // Before, it stayed open: a client_id it handed out could be one the exchange gives a team later, whose fills would then credit a stranger.
      expect(run.lines.some((l) => /POST \/register is closed \(REGISTRATION=open opens it\)/.test(l.msg ?? ''))).toBe(true);
      await until(async () => (await http.send('GET', '/health').catch(() => null))?.body.engine === true, 'the system to be healthy', 30_000);
      const r = await http.register('newteam', 'newteam-password');
      expect(r.status).toBe(403);
      expect(r.body.error.code).toBe('registration_closed');
      expect((await http.holdings('team1', 'team1pass')).status).toBe(200);
      run.child.kill('SIGINT');
      expect(await run.exited).toBe(0);
    } finally {
      await ex.close();
    }
  });

  it('a second launcher on the same DATA_DIR refuses to start (exit 2, naming the running one) and leaves the first system and its nats-server alone', async () => {
    const w = workspace();
    const env = await launcherEnv(w.dir, w.accounts);
    const http = api(`http://127.0.0.1:${env.HTTP_PORT}`);
    const first = runLauncher(env);
    runs.push(first);
    await until(async () => (await http.send('GET', '/health').catch(() => null))?.body.engine === true, 'the system to be healthy', 30_000);
    const natsPid = readFileSync(join(w.dir, 'nats.pid'), 'utf8').trim();

    // The same `npm start` again, in another terminal.
    const second = await runToExit(env);
    expect(second.code).toBe(2);
    const fatal = second.lines.filter((l) => l.level === 60);
    expect(fatal.map((l) => l.msg)).toEqual([expect.stringMatching(new RegExp(`^configuration error: DATA_DIR=.* is in use by the launcher running as pid ${first.child.pid} `))]);
    // Before, it took the running nats-server for one a killed launcher left, and stopped it.
    expect(second.lines.filter((l) => /nats-server/.test(l.msg ?? ''))).toEqual([]);
    expect(readFileSync(join(w.dir, 'nats.pid'), 'utf8').trim()).toBe(natsPid);
    expect(readFileSync(`/proc/${natsPid}/cmdline`, 'utf8')).toContain('nats-server');
    expect(first.lines.filter((l) => /nats-server exited/.test(l.msg ?? ''))).toEqual([]);
    // NATS still answers: a request that goes through the engine succeeds.
    expect((await http.holdings('team1', 'team1pass')).status).toBe(200);

    first.child.kill('SIGINT');
    expect(await first.exited).toBe(0);
    // Released at the stop: the next start takes DATA_DIR at once.
    expect(existsSync(join(w.dir, 'launcher.pid'))).toBe(false);
  });

  it('clean stop then start on the same data: same holdings, ready again; a killed nats-server is restarted', async () => {
    const w = workspace();
    const env = await launcherEnv(w.dir, w.accounts);
    const http = api(`http://127.0.0.1:${env.HTTP_PORT}`);
    const healthy = () => until(async () => (await http.send('GET', '/health').catch(() => null))?.body.engine === true, 'the system to be healthy', 30_000);

    let run = runLauncher(env);
    runs.push(run);
    await healthy();
    // The exchange's fills as the feed bridge publishes them, with its generated credentials; the operator watches them land.
    const url = readFileSync(join(w.dir, 'nats.url'), 'utf8').trim();
    const feed = await connectNats(url, 'test-fills', { role: 'feed', credsFile: join(w.dir, 'nats-auth/feed.json') });
    const operator = await connectNats(url, 'test-operator', { role: 'operator', credsFile: join(w.dir, 'nats-auth/operator.json') });
    await buy(operator, 1, Object.fromEntries([3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((s) => [s, 3])), feed);
    await feed.close();
    await operator.close();
    expect((await http.create('team1', 'team1pass', 2, 'UNDY')).status).toBe(200);
    const before = (await http.holdings('team1', 'team1pass')).body;
    expect(before.holdings.UNDY).toBe(2);

    for (let i = 0; i < 2; i++) {
      run.child.kill('SIGINT');
      expect(await run.exited).toBe(0);
      run = runLauncher(env);
      runs.push(run);
      await healthy();
      expect((await http.holdings('team1', 'team1pass')).body).toEqual(before);
    }

    // kill -9 of nats-server: the launcher restarts it on the same port and store, and the services reconnect.
    const pid = Number(execFileSync('pgrep', ['-f', `nats-server .*-p ${env.NATS_PORT}( |$)`], { encoding: 'utf8' }).trim().split('\n')[0]);
    process.kill(pid, 'SIGKILL');
    await run.waitForLine((l) => l.msg === 'nats-server restarted', 'nats-server restarted');
    await healthy();
    expect((await http.create('team1', 'team1pass', 1, 'UNDY')).status).toBe(200);
    expect((await http.holdings('team1', 'team1pass')).body.holdings.UNDY).toBe(3);
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(0);
  }, 180_000);

  it('runs two engine shards with ENGINE_SHARDS=2: each team on its shard, with its own permissions, through a clean stop and start', async () => {
    // bob's line is shard 1's (client_id 5), its username shard 0's to decide: the shards ask each other, as their own NATS user.
    const w = workspace(`${ROSTER}5 bob bob-roster-pass\n`);
    // Beside no simulator, registration is open only when asked for.
    const env = await launcherEnv(w.dir, w.accounts, { ENGINE_SHARDS: '2', REGISTRATION: 'open' });
    const http = api(`http://127.0.0.1:${env.HTTP_PORT}`);
    const healthy = () => until(async () => (await http.send('GET', '/health').catch(() => null))?.body.engine === true, 'the system to be healthy', 30_000);
    let run = runLauncher(env);
    runs.push(run);
    const readyShards = async () => {
      for (const shard of [0, 1]) await run.waitForLine((l) => l.msg === 'engine ready' && l.shard === shard && l.shards === 2, `engine shard ${shard} ready`);
    };
    await readyShards();
    await healthy();
    const url = readFileSync(join(w.dir, 'nats.url'), 'utf8').trim();
    const feed = await connectNats(url, 'test-fills', { role: 'feed', credsFile: join(w.dir, 'nats-auth/feed.json') });
    const operator = await connectNats(url, 'test-operator', { role: 'operator', credsFile: join(w.dir, 'nats-auth/operator.json') });
    const basket = Object.fromEntries([3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((s) => [s, 2]));
    await buy(operator, 1, basket, feed);
    await buy(operator, 2, basket, feed);
    await feed.close();
    await operator.close();
    expect((await http.create('team1', 'team1pass', 1, 'UNDY')).status).toBe(200);
    expect((await http.create('team2', 'team2pass', 2, 'UNDY')).status).toBe(200);
    expect((await http.register('newteam', 'newteam-password')).status).toBe(200);
    await until(async () => (await http.holdings('bob', 'bob-roster-pass')).status === 200, 'bob\'s line to be taken once shard 0 gave its name', 30_000);
    expect((await http.register('bob', 'bob-register-pass')).body.error?.code).toBe('username_taken');
    // The operator's consistency check finds both shards from DATA_DIR, without being told ENGINE_SHARDS.
    const { ENGINE_SHARDS: _shards, ...toolEnv } = env;
    const check = execFileSync(process.execPath, [join(PROJECT_ROOT, 'dist/src/tools/check.js')], { env: toolEnv, encoding: 'utf8' });
    expect(check).toContain('consistent: live state equals the rebuild');
    expect(JSON.parse(check.slice(0, check.lastIndexOf('}') + 1)).accounts).toBe(4);
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(0);

    run = runLauncher(env);
    runs.push(run);
    await readyShards();
    await healthy();
    expect((await http.holdings('team1', 'team1pass')).body.holdings.UNDY).toBe(1);
    expect((await http.holdings('team2', 'team2pass')).body.holdings.UNDY).toBe(2);
    expect((await http.holdings('newteam', 'newteam-password')).status).toBe(200);
    expect((await http.holdings('bob', 'bob-roster-pass')).status).toBe(200);
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(0);
  });

  it('restarting the demo (built-in simulator) keeps every team\'s positions: the simulator continues its exchange session', async () => {
    const w = workspace();
    const env = await launcherEnv(w.dir, w.accounts, { NDFEX_SIMULATOR: 'on', NDFEX_SIM_RATE: '200' });
    const http = api(`http://127.0.0.1:${env.HTTP_PORT}`);
    const traded = async () => {
      const h = await http.send('GET', '/holdings', { basic: ['team1', 'team1pass'] }).catch(() => null);
      return h?.status === 200 && Object.keys(h.body.holdings).length > 0 ? h.body : undefined;
    };
    let run = runLauncher(env);
    runs.push(run);
    const before = await until(traded, 'the simulator to fill team1', 30_000);
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(0);

    run = runLauncher(env);
    runs.push(run);
    await run.waitForLine((l) => l.msg === 'simulator continues its session' && l.afterCrash === false, 'simulator continues its session');
    const after = await until(traded, 'holdings after the restart', 30_000);
    expect(after.seq).toBeGreaterThanOrEqual(before.seq);
    // The bridge hears the continued session, and counts no exchange restart.
    const health = await until(async () => {
      const h = (await http.send('GET', '/health')).body;
      return h.feed?.clearing?.messages > 0 ? h : undefined;
    }, 'the feed bridge to hear the simulator again', 30_000);
    expect(health.feed.clearing.restarts).toBe(0);
    // No exchange restart was recorded: the fill stream holds no session marker.
    const url = readFileSync(join(w.dir, 'nats.url'), 'utf8').trim();
    const operator = await connectNats(url, 'test-operator', { role: 'operator', credsFile: join(w.dir, 'nats-auth/operator.json') });
    const jsm = await jetstreamManager(operator);
    expect(await jsm.streams.getMessage(FILL_STREAM, { last_by_subj: SESSION_SUBJECT })).toBeNull();
    await operator.close();
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(0);
  });

  it('a SIGKILL of the feed bridge loses no fill: the standby bridge stores what the exchange sends until the bridge is back', async () => {
    const w = workspace();
    const env = await launcherEnv(w.dir, w.accounts, { NDFEX_SIMULATOR: 'on', NDFEX_SIM_RATE: '200' });
    const http = api(`http://127.0.0.1:${env.HTTP_PORT}`);
    const health = async () => (await http.send('GET', '/health').catch(() => null))?.body;
    const run = runLauncher(env);
    runs.push(run);
    const before = await until(async () => {
      const h = await health();
      return h?.feed?.live && h.feed.standby?.live && h.feed.standby.waiting === null && h.feed.clearing.last_seq > 0 ? h : undefined;
    }, 'the bridge and its standby following the simulator', 60_000);
    // The bridge's process, told from the standby's by its role (and from other tests' by this run's NATS port).
    const bridgePid = execFileSync('pgrep', ['-f', 'dist/src/feed/main.js'], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map(Number)
      .find((pid) => {
        const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
        return environ.includes('NDFEX_FEED_ROLE=bridge') && environ.some((v) => v.startsWith('NATS_URL=') && v.endsWith(`:${env.NATS_PORT}`));
      });
    expect(bridgePid).toBeDefined();
    process.kill(bridgePid!, 'SIGKILL');
    await run.waitForLine((l) => l.msg === 'service exited: restarting' && l.service === 'feed', 'the launcher restarting the bridge');
    const after = await until(async () => {
      const h = await health();
      // A gap the restarted bridge heard is taken back once it finds the standby stored its fills (src/feed/gap-cover.ts).
      return h?.feed?.live && h.feed.age_ms < 1000 && h.feed.clearing.last_seq > before.feed.clearing.last_seq + 100 && h.feed.clearing.gaps === 0 && !h.feed.problems ? h : undefined;
    }, 'the restarted bridge following the simulator, no fill missing', 60_000);
    // Every fill of the session is in the stream, once: no seq missing between the first and the last.
    const url = readFileSync(join(w.dir, 'nats.url'), 'utf8').trim();
    const operator = await connectNats(url, 'test-operator', { role: 'operator', credsFile: join(w.dir, 'nats-auth/operator.json') });
    const jsm = await jetstreamManager(operator);
    const seqs: number[] = [];
    for (let seq = 1; ; seq++) {
      const m = await jsm.streams.getMessage(FILL_STREAM, { seq }).catch(() => null);
      if (!m) break;
      const id = m.header?.get('Nats-Msg-Id') ?? '';
      if (id.startsWith('fill-1-')) seqs.push(Number(id.slice('fill-1-'.length)));
    }
    await operator.close();
    expect(new Set(seqs).size).toBe(seqs.length);
    const sorted = [...seqs].sort((a, b) => a - b);
    expect(sorted[sorted.length - 1]! - sorted[0]! + 1).toBe(sorted.length);
    expect(sorted.length).toBeGreaterThan(100);
    expect(after.feed.clearing.missed_messages).toBe(0);
    expect(after.feed.standby.published).toBeGreaterThan(0);
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(0);
  });

  it('a hung pricing service (SIGSTOP) is a problem on /health naming it, gone once it runs again', async () => {
    const w = workspace();
    const env = await launcherEnv(w.dir, w.accounts);
    const http = api(`http://127.0.0.1:${env.HTTP_PORT}`);
    const health = async () => (await http.send('GET', '/health').catch(() => null))?.body;
    const pricingProblems = (h: { problems?: string[] }) => (h.problems ?? []).filter((p) => /pricing/.test(p));
    const run = runLauncher(env);
    runs.push(run);
    // Its status goes out under the pricing role's permissions, and in under the gateway's.
    // Ready, not only heard: stopped while starting, it is told as silent "while starting (its step)".
    const up = await until(async () => {
      const h = await health();
      return h?.pricing?.live && (h.pricing.phase ?? 'ready') === 'ready' ? h : undefined;
    }, 'pricing ready on /health', 45_000);
    expect(pricingProblems(up)).toEqual([]);
    // This run's pricing process (other tests' are told apart by this run's NATS port).
    const pid = execFileSync('pgrep', ['-f', 'dist/src/pricing/main.js'], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map(Number)
      .find((p) => readFileSync(`/proc/${p}/environ`, 'utf8').split('\0').some((v) => v.startsWith('NATS_URL=') && v.endsWith(`:${env.NATS_PORT}`)));
    expect(pid).toBeDefined();
    process.kill(pid!, 'SIGSTOP');
    try {
      const hung = await until(async () => {
        const h = await health();
        return h && pricingProblems(h).length > 0 ? h : undefined;
      }, 'the hung pricing on /health', 15_000);
      expect(hung.status).toBe('degraded');
      expect(pricingProblems(hung)).toEqual([expect.stringMatching(/^the pricing service last reported \d+ s ago: ETF prices \(GET \/etfs, the WebSocket stream\), the charts and the scorecards are not being updated/)]);
    } finally {
      process.kill(pid!, 'SIGCONT');
    }
    await until(async () => {
      const h = await health();
      return h?.pricing?.live && pricingProblems(h).length === 0;
    }, 'pricing reporting again');
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(0);
  });
});
