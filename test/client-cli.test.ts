import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PROJECT_ROOT } from '../src/config/config.js';
import { EtfApiError, EtfClient, type LiveHoldings } from '../src/client/index.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { freePort } from '../src/shared/ports.js';
import { buy, killProcess, natsClient, quietLog, spawnEngine, startTestNats, tempDir, testConfig, undyBasket, until } from './helpers/system.js';

const run = promisify(execFile);
let nats: Awaited<ReturnType<typeof startTestNats>>;
let dir: ReturnType<typeof tempDir>;
let engine: Awaited<ReturnType<typeof spawnEngine>>;
let gateway: GatewayHandle;
let nc: Awaited<ReturnType<typeof natsClient>>;
let url: string;

beforeAll(async () => {
  nats = await startTestNats();
  dir = tempDir();
  const cfg = testConfig(dir.path, { requestTimeoutMs: 400 });
  engine = await spawnEngine(nats.url, cfg);
  gateway = await startGateway(cfg, nats.url, quietLog);
  url = `http://127.0.0.1:${gateway.port}`;
  nc = await natsClient(nats.url);
  await buy(nc, 1, undyBasket(10));
});

afterAll(async () => {
  engine?.kill('SIGCONT');
  if (engine) await killProcess(engine);
  await nc?.close();
  await gateway?.close();
  await nats?.stop();
  nats?.remove();
  dir?.remove();
});

const team1 = () => new EtfClient({ url, username: 'team1', password: 'team1pass' });

describe('client library', () => {
  it('covers every call: holdings, create, redeem, idempotent retry, request, history, ETFs, positions, symbols, register', async () => {
    const etf = team1();
    const start = (await etf.holdings()).holdings;
    expect(start.KNAN).toBe(10);
    expect(start.UNDY).toBeUndefined();
    const created = await etf.create(3, { etf: 'UNDY', requestId: 'lib-1' });
    expect(created).toMatchObject({ op: 'create', amount: 3, deltas: { KNAN: -3, UNDY: 3 }, client_request_id: 'lib-1' });
    expect((await etf.create(3, { etf: 'UNDY', requestId: 'lib-1' })).replayed).toBe(true);
    const redeemed = await etf.redeem(1);
    expect(redeemed.holdings.UNDY).toBe(2);
    expect(await etf.request('lib-1')).toMatchObject({ status: 'accepted', kind: 'create', amount: 3 });
    const page = await etf.history({ limit: 10 });
    expect(page.entries.map((e) => e.kind)).toEqual(['redeem', 'create']);
    expect((await etf.etfs()).etfs[0]!.name).toBe('UNDY');
    expect((await etf.positions(1, 'UNDY')).quantity).toBe(2);
    expect((await etf.symbols()).symbols).toHaveLength(13);
    const reg = await new EtfClient({ url }).register('libteam', 'libteampass');
    expect(reg.username).toBe('libteam');
  });

  it('errors are EtfApiError with the service\'s code and status', async () => {
    const err = await team1().create(1000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EtfApiError);
    expect(err).toMatchObject({ status: 400, code: 'insufficient_holdings' });
    await expect(new EtfClient({ url, username: 'team1', password: 'wrong-password' }).holdings()).rejects.toMatchObject({ status: 401, code: 'unauthorized' });
  });

  it('a create retried after 503s (engine paused) happens exactly once', async () => {
    let first503!: () => void;
    const answered503 = new Promise<void>((r) => (first503 = r));
    const etf = new EtfClient({ url, username: 'team1', password: 'team1pass', retries: 8, onRetry: (err) => (err as EtfApiError).status === 503 && first503() });
    const before = (await etf.holdings()).holdings.UNDY ?? 0;
    engine.kill('SIGSTOP');
    const pending = etf.create(1, { requestId: 'retry-me' });
    // The first attempt times out at the gateway (a 503); the engine comes back; a retry with the same key succeeds.
    await answered503;
    engine.kill('SIGCONT');
    const r = await pending;
    expect(r.client_request_id).toBe('retry-me');
    expect((await etf.holdings()).holdings.UNDY).toBe(before + 1);
    expect((await etf.history({ limit: 50 })).entries.filter((e) => e.client_request_id === 'retry-me')).toHaveLength(1);
  });

  it('the stream resumes after a reconnect without missing or repeating a change', async () => {
    const seen: LiveHoldings[] = [];
    const stream = team1().stream({ onHoldings: (h) => seen.push({ ...h, holdings: { ...h.holdings } }) });
    await until(() => seen.length > 0, 'the first snapshot');
    const seq0 = stream.seq;
    stream.drop();
    // Changes while it is away: two fills.
    await buy(nc, 1, { 3: 1, 4: 1 });
    await until(() => stream.connections >= 2 && stream.seq === seq0 + 2, 'resumed past both fills');
    expect(seen.map((h) => h.seq)).toEqual([seq0, seq0 + 1, seq0 + 2]);
    expect(seen.at(-1)!.holdings).toEqual((await team1().holdings()).holdings);
    stream.close();
  });
});

describe('command line (ndfex-etf)', () => {
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    run(process.execPath, [join(PROJECT_ROOT, 'dist/src/cli/main.js'), ...args], { env: { ...process.env, ETF_URL: url, ETF_USER: 'team1', ETF_PASSWORD: 'team1pass', ...env } }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );

  it('every command, human and --json', async () => {
    const h = await cli(['holdings']);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/team1 \(client 1, seq \d+, cash -?\d+\)\nKNAN\s+\d+/);
    const j = JSON.parse((await cli(['holdings', '--json'])).stdout);
    expect(j.client_id).toBe(1);
    const c = await cli(['create', '1', '--etf', 'UNDY', '--request-id', 'cli-1']);
    expect(c.stdout).toMatch(/^created 1 UNDY \(r\d+\): KNAN -1, .*UNDY \+1/);
    expect(JSON.parse((await cli(['redeem', '1', '--json'])).stdout)).toMatchObject({ op: 'redeem', amount: 1 });
    expect((await cli(['create', '1', '--dry-run'])).stdout).toMatch(/^would create 1 UNDY \(dry-run\): KNAN -1/);
    expect((await cli(['request', 'cli-1'])).stdout).toMatch(/create 1 UNDY: accepted/);
    expect((await cli(['history', '--limit', '2'])).stdout.trim().split('\n')).toHaveLength(2);
    expect((await cli(['requests', 'cli-1', '--json'])).stdout).toMatch(/"client_request_id":"cli-1"/);
    expect(JSON.parse((await cli(['requests', '--limit', '3', '--json'])).stdout).entries).toHaveLength(3);
    expect(JSON.parse((await cli(['prices', '--json'])).stdout)[0]).toMatchObject({ name: 'UNDY', components: expect.any(Array) });
    expect((await cli(['prices'])).stdout).toMatch(/^UNDY/);
    expect(JSON.parse((await cli(['register', 'cliteam', 'cliteampass', '--json'])).stdout).username).toBe('cliteam');
    const w = await cli(['watch', '--for', '1', '--json']);
    expect(w.code).toBe(0);
    expect(JSON.parse(w.stdout.split('\n')[0]!)).toMatchObject({ type: 'holdings', cause: 'snapshot' });
    expect((await cli(['watch', '--for', '1'])).stdout).toMatch(/^\[[0-9:.]+\] holdings seq \d+ \(snapshot\): KNAN \d+/);
  });

  it('watch --json says, as a line of its own, why it is not connected', async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    const w = await cli(['watch', '--for', '1', '--json'], { ETF_URL: closed });
    expect(w.code).toBe(0);
    expect(JSON.parse(w.stdout.split('\n')[0]!)).toEqual({ type: 'status', status: 'reconnecting', detail: expect.stringMatching(/ECONNREFUSED/) });
  });

  it('errors: one line, no stack trace, non-zero exit', async () => {
    const bad = await cli(['create', '1000000']);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toMatch(/^ndfex-etf: insufficient_holdings: insufficient holdings to create/);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
    const auth = await cli(['holdings'], { ETF_PASSWORD: 'wrong-password' });
    expect(auth).toMatchObject({ code: 1 });
    expect(auth.stderr.trim()).toBe('ndfex-etf: unauthorized: authentication failed');
    expect((await cli(['create', 'two'])).code).toBe(2);
    expect((await cli(['frobnicate'])).stderr).toMatch(/unknown command frobnicate/);
    const unknown = await cli(['request', 'no-such-key']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.trim().split('\n')).toHaveLength(1);
    expect(unknown.stderr).toMatch(/^ndfex-etf: not_found: /);
    const refused = await cli(['watch', '--for', '5'], { ETF_PASSWORD: 'wrong-password' });
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toMatch(/^ndfex-etf: unauthorized: stream refused/);
    expect(refused.stderr).not.toMatch(/\n\s+at /);
    const closed = `http://127.0.0.1:${await freePort()}`;
    const down = await cli(['holdings'], { ETF_URL: closed });
    expect(down.stderr.trim()).toBe(`ndfex-etf: cannot reach ${closed}: is the service running (npm start)?`);
  });
});

describe('npm run fill', () => {
  const fill = (args: string[]) =>
    run(process.execPath, [join(PROJECT_ROOT, 'dist/src/tools/publish-fill.js'), ...args], { env: { ...process.env, NATS_URL: nats.url, NATS_CREDS: '' } }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );

  it('refuses an unknown side or a missing symbol in one line, and publishes a good fill', async () => {
    const side = await fill(['--client', '2', '--symbol', 'KNAN', '--quantity', '1', '--side', 'sel']);
    expect(side.code).toBe(2);
    expect(side.stderr.trim().split('\n')).toHaveLength(1);
    expect(side.stderr).toMatch(/^fill: --side must be buy or sell, not "sel"/);
    const symbol = await fill(['--client', '2', '--quantity', '1']);
    expect(symbol.code).toBe(2);
    expect(symbol.stderr.trim()).toMatch(/^fill: --symbol \(a ticker or symbol id\) or --basket is required/);
    expect((await fill(['--client', '2', '--symbol', 'NOPE', '--quantity', '1'])).stderr).toMatch(/unknown symbol NOPE/);
    const ok = await fill(['--client', '2', '--symbol', 'KNAN', '--quantity', '3', '--side', 'sell']);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/"side":2/);
    await until(async () => (await new EtfClient({ url, username: 'team2', password: 'team2pass' }).holdings()).holdings.KNAN === -3, 'the sell applied');
  });
});

describe('Python client example (examples/python/etf_client.py)', () => {
  it('reads holdings and creates from the shell, with the same answers as the service', async () => {
    const py = (args: string[]) =>
      run('python3', [join(PROJECT_ROOT, 'examples/python/etf_client.py'), ...args], { env: { ...process.env, ETF_URL: url, ETF_USER: 'team1', ETF_PASSWORD: 'team1pass' } }).then(
        (r) => ({ code: 0, ...r }),
        (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
      );
    const before = await team1().holdings();
    expect(JSON.parse((await py(['holdings'])).stdout)).toEqual(before.holdings);
    const created = await py(['create', '1']);
    expect(created.stdout).toMatch(/^create 1 UNDY \(r\d+\): \{.*"UNDY": 1/);
    expect((await team1().holdings()).holdings.UNDY).toBe((before.holdings.UNDY ?? 0) + 1);
    const refused = await py(['create', '100000']);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toMatch(/^etf_client: insufficient_holdings: /);
  });

  const PY = join(PROJECT_ROOT, 'examples/python/etf_client.py');
  const pyAt = (base: string, args: string[], user = 'team1', password = 'team1pass') =>
    run('python3', [PY, ...args], { env: { ...process.env, ETF_URL: base, ETF_USER: user, ETF_PASSWORD: password } }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );

  /** `python3 etf_client.py stream ...` with its JSON lines as they come; `next(pred)` resolves on the first line that matches. */
  function pyStream(args: string[]) {
    const child = spawn('python3', [PY, 'stream', ...args], { env: { ...process.env, ETF_URL: url, ETF_USER: 'team1', ETF_PASSWORD: 'team1pass' }, stdio: ['ignore', 'pipe', 'inherit'] });
    const seen: any[] = [];
    const waiters: { pred: (m: any) => boolean; resolve: (m: any) => void }[] = [];
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = JSON.parse(line);
      seen.push(m);
      for (const w of [...waiters]) if (w.pred(m)) waiters.splice(waiters.indexOf(w), 1) && w.resolve(m);
    });
    return {
      next: (pred: (m: any) => boolean) =>
        new Promise<any>((resolve) => {
          const hit = seen.find(pred);
          if (hit) return resolve(hit);
          waiters.push({ pred, resolve });
        }),
      stop: () => killProcess(child),
    };
  }

  it('streams holdings: a delta after a fill; a restart resumes from the last seq with the deltas missed', async () => {
    const first = pyStream([]);
    const snap = await first.next((m) => m.type === 'snapshot');
    await buy(nc, 1, { 3: 2 });
    const delta = await first.next((m) => m.type === 'delta' && m.seq === snap.seq + 1);
    expect(delta.cause).toBe('fill');
    expect(delta.deltas).toEqual([{ symbol: 3, ticker: 'KNAN', quantity: 2 }]);
    await first.stop();

    // Resume from before that fill: the server replays it, no snapshot.
    const again = pyStream(['--resume-from', String(snap.seq)]);
    await again.next((m) => m.type === 'resumed');
    const replayed = await again.next((m) => m.type === 'delta');
    expect(replayed.seq).toBe(snap.seq + 1);
    expect(replayed.deltas).toEqual(delta.deltas);
    await again.stop();
  });

  it('dry run, register and leaderboard from the shell', async () => {
    const before = await team1().holdings();
    const dry = await pyAt(url, ['create', '2', '--dry-run']);
    expect(dry.stdout).toMatch(/^would create 2 UNDY \(dry run, fee 0\): \{.*"UNDY": 2/);
    expect((await team1().holdings()).holdings).toEqual(before.holdings);

    const reg = await pyAt(url, ['register', 'pyteam', 'pyteam-pass']);
    expect(reg.stdout).toMatch(/^registered pyteam as client \d+/);
    const board = await pyAt(url, ['leaderboard']);
    const names = board.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/)[1]);
    expect(names).toEqual((await team1().leaderboard()).teams.map((t) => t.username));
    expect(names).toContain('pyteam');
  });

  it("honours a 429's Retry-After, and a server that is down fails with one readable line", async () => {
    // A gateway that lets a team convert once a second: the second create waits out its Retry-After, then succeeds.
    // The same data directory as the engine: a gateway reads the credentials key there (src/shared/credentials-key.ts).
    const throttled = await startGateway(
      testConfig(dir.path, { throttle: { enabled: true, conversions: { burst: 1, perMinute: 60 } } }),
      nats.url,
      quietLog,
    );
    try {
      const base = `http://127.0.0.1:${throttled.port}`;
      const script = `import sys; sys.path.insert(0, ${JSON.stringify(join(PROJECT_ROOT, 'examples/python'))})
from etf_client import EtfClient
waits = []
etf = EtfClient(${JSON.stringify(base)}, "team1", "team1pass", on_retry=lambda err, wait: waits.append((err.status, wait)))
etf.create(1); etf.create(1)
print(waits)`;
      const r = await run('python3', ['-c', script]);
      expect(r.stdout.trim()).toBe('[(429, 1.0)]');
    } finally {
      await throttled.close();
    }

    const down = await pyAt(`http://127.0.0.1:${await freePort()}`, ['holdings']);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/^etf_client: cannot reach http:\/\/127\.0\.0\.1:\d+: .*refused.*\n$/);
    expect(down.stderr.trim().split('\n')).toHaveLength(1);
    const downStream = await pyAt(`http://127.0.0.1:${await freePort()}`, ['stream']);
    expect(downStream.stderr.trim().split('\n')).toHaveLength(1);
    expect(downStream.stderr).toMatch(/^etf_client: cannot reach ws:/);
  });

  it('a stream refused by the login throttle (its host locked by failed logins) waits the advised seconds and signs in', async () => {
    // Two failed logins lock the host (every loopback address) for 3 s.
    const locked = await startGateway(testConfig(dir.path, { throttle: { enabled: true, loginFailuresPerAddress: { burst: 2, perMinute: 20 } } }), nats.url, quietLog);
    try {
      const base = `http://127.0.0.1:${locked.port}`;
      const guesser = new EtfClient({ url: base, username: 'nobody', password: 'guess-1234', retries: 1 });
      for (let i = 0; i < 2; i++) await expect(guesser.holdings()).rejects.toMatchObject({ status: 401 });
      await expect(guesser.holdings()).rejects.toMatchObject({ status: 429 });
      // Its connections counted; the wait it was told of; the seconds from the first connection to the one that signed in.
      const script = `import sys, time; sys.path.insert(0, ${JSON.stringify(join(PROJECT_ROOT, 'examples/python'))})
import etf_client
opened, waits = [], []
class Counted(etf_client._WebSocket):
    def __init__(self, *a):
        opened.append(time.monotonic())
        super().__init__(*a)
etf_client._WebSocket = Counted
for m in etf_client.EtfClient(${JSON.stringify(base)}, "team1", "team1pass", on_retry=lambda err, wait: waits.append((err.status, wait))).stream():
    if m["type"] == "welcome":
        break
print(len(opened), waits, opened[-1] - opened[0] >= waits[0][1])`;
      const r = await run('python3', ['-c', script]);
      expect(r.stdout.trim()).toMatch(/^2 \[\(429, [1-9]\d*\)\] True$/);
    } finally {
      await locked.close();
    }
  });
});
