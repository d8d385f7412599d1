import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { request } from 'node:http';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PROJECT_ROOT } from '../src/config/config.js';
import { EtfApiError, EtfClient } from '../src/client/index.js';
import { retryAfterOfReason } from '../proto/ws.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { buy, quietLog, startTestNats, testConfig, undyBasket, useSystem } from './helpers/system.js';

const sys = useSystem();
const run = promisify(execFile);

/**
 * A TCP relay to the gateway that can lose one answer: the request gets
 * through and is carried out, the connection breaks before the client hears
 * back (as a network failure after sending does).
 */
class LossyRelay {
  loseNextAnswer = false;
  answersLost = 0;
  private readonly sockets = new Set<Socket>();
  private constructor(private readonly server: Server) {}

  static async start(target: number): Promise<LossyRelay & { port: number }> {
    const relay = new LossyRelay(createServer());
    relay.server.on('connection', (client) => {
      const upstream = connect(target, '127.0.0.1');
      for (const s of [client, upstream]) {
        relay.sockets.add(s);
        s.on('close', () => relay.sockets.delete(s));
        s.on('error', () => {});
      }
      client.pipe(upstream);
      upstream.on('data', (chunk) => {
        if (relay.loseNextAnswer) {
          relay.loseNextAnswer = false;
          relay.answersLost++;
          client.destroy();
          upstream.destroy();
          return;
        }
        client.write(chunk);
      });
      upstream.on('end', () => client.end());
    });
    await new Promise<void>((r) => relay.server.listen(0, '127.0.0.1', r));
    return Object.assign(relay, { port: (relay.server.address() as { port: number }).port });
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

describe('client library retries', () => {
  let relay: Awaited<ReturnType<typeof LossyRelay.start>>;
  let readLimited: GatewayHandle;
  let conversionLimited: GatewayHandle;

  beforeAll(async () => {
    await buy(sys.nc, 1, undyBasket(10));
    relay = await LossyRelay.start(sys.sys.gateway.port);
    // Another gateway on the same engine whose teams may make two requests at once, then one a second.
    readLimited = await startGateway(testConfig(sys.dir.path, { throttle: { enabled: true, team: { burst: 2, perMinute: 60 } } }), sys.nats.url, quietLog);
    // And one whose teams may convert once at once, then once a second: the second create in a row is a 429.
    conversionLimited = await startGateway(testConfig(sys.dir.path, { throttle: { enabled: true, conversions: { burst: 1, perMinute: 60 } } }), sys.nats.url, quietLog);
  });

  afterAll(async () => {
    await relay?.close();
    await readLimited?.close();
    await conversionLimited?.close();
  });

  it('a create whose answer is lost is sent again with the same key and happens once', async () => {
    const retried: unknown[] = [];
    const etf = new EtfClient({ url: `http://127.0.0.1:${relay.port}`, username: 'team1', password: 'team1pass', onRetry: (err) => retried.push(err) });
    const before = (await etf.holdings()).holdings.UNDY ?? 0;
    relay.loseNextAnswer = true;
    const r = await etf.create(1, { etf: 'UNDY' });
    expect(relay.answersLost).toBe(1);
    expect(retried).toHaveLength(1);
    expect(retried[0]).not.toBeInstanceOf(EtfApiError); // a network failure, not an answer
    // The first attempt was carried out; the second got its stored answer.
    expect(r.replayed).toBe(true);
    expect(r.client_request_id).toMatch(/^c-/);
    expect((await etf.holdings()).holdings.UNDY).toBe(before + 1);
    const entries = (await etf.history({ limit: 50 })).entries.filter((e) => e.client_request_id === r.client_request_id);
    expect(entries).toHaveLength(1);
  });

  it('a read whose connection fails is reported at once, not retried', async () => {
    const retried: unknown[] = [];
    const etf = new EtfClient({ url: `http://127.0.0.1:${relay.port}`, username: 'team1', password: 'team1pass', onRetry: (err) => retried.push(err) });
    relay.loseNextAnswer = true;
    await expect(etf.holdings()).rejects.toThrow();
    expect(retried).toHaveLength(0);
  });

  it("a 429 is retried after its Retry-After, with the same key for a create", async () => {
    const retried: EtfApiError[] = [];
    const url = `http://127.0.0.1:${conversionLimited.port}`;
    const etf = new EtfClient({ url, username: 'team1', password: 'team1pass', onRetry: (err) => retried.push(err as EtfApiError) });
    const before = (await etf.holdings()).holdings.UNDY ?? 0;
    await etf.create(1, { requestId: 'throttled-1' });
    const second = await etf.create(1, { requestId: 'throttled-2' });
    expect(second.client_request_id).toBe('throttled-2');
    expect(second.replayed).toBeUndefined();
    expect(retried.length).toBeGreaterThanOrEqual(1);
    expect(retried[0]).toMatchObject({ status: 429, code: 'too_many_requests', retryAfterS: 1 });
    expect((await etf.holdings()).holdings.UNDY).toBe(before + 2);
    // Without retries, the caller sees the 429 and how long to wait.
    const once = new EtfClient({ url, username: 'team1', password: 'team1pass', retries: 1 });
    await once.create(1).catch(() => {}); // spends the token, if it came back meanwhile
    await expect(once.create(1)).rejects.toMatchObject({ status: 429, retryAfterS: 1 });
  });

  it('a read refused with a 429 is retried after its Retry-After', async () => {
    const retried: EtfApiError[] = [];
    const etf = new EtfClient({ url: `http://127.0.0.1:${readLimited.port}`, username: 'team2', password: 'team2pass', onRetry: (err) => retried.push(err as EtfApiError) });
    const answers = [await etf.holdings(), await etf.holdings(), await etf.holdings()];
    expect(answers.map((h) => h.username)).toEqual(['team2', 'team2', 'team2']);
    expect(retried.length).toBeGreaterThanOrEqual(1);
    expect(retried[0]).toMatchObject({ status: 429, retryAfterS: 1 });
  });
});

/** A wrong login over HTTP from a chosen loopback address (the client library cannot pick its source address). */
function wrongLogin(port: number, from: string, username: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const authorization = `Basic ${Buffer.from(`${username}:not-the-password`).toString('base64')}`;
    const req = request({ host: '127.0.0.1', port, path: '/holdings', headers: { authorization }, localAddress: from, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the client library stream and the login throttle', () => {
  let hostLimited: GatewayHandle;
  let userLimited: GatewayHandle;

  beforeAll(async () => {
    // Two failed logins lock a host for 3 s (one back every 3 s); every loopback address is one host, as by default.
    hostLimited = await startGateway(testConfig(sys.dir.path, { throttle: { enabled: true, loginFailuresPerAddress: { burst: 2, perMinute: 20 } } }), sys.nats.url, quietLog);
    // Two failed logins lock a username for 3 s; each loopback address its own host, so the guesser is not the team's host.
    userLimited = await startGateway(
      testConfig(sys.dir.path, { throttle: { enabled: true, loopback: 'each', loginFailuresPerUser: { burst: 2, perMinute: 20 }, loginFailuresPerAddress: { burst: 100, perMinute: 6000 } } }),
      sys.nats.url,
      quietLog,
    );
  });

  afterAll(async () => {
    await hostLimited?.close();
    await userLimited?.close();
  });

  /** A stream of team1 until it opens or is refused: its statuses, when each came, and its connections. */
  async function follow(port: number) {
    const statuses: { s: string; detail?: string; at: number }[] = [];
    let stream!: ReturnType<EtfClient['stream']>;
    const settled = new Promise<void>((resolve) => {
      stream = new EtfClient({ url: `http://127.0.0.1:${port}`, username: 'team1', password: 'team1pass' }).stream({
        onStatus: (s, detail) => {
          statuses.push({ s, detail, at: Date.now() });
          if (s === 'open' || s === 'refused') resolve();
        },
      });
    });
    try {
      await settled;
    } finally {
      stream.close();
    }
    return { statuses, connections: stream.connections };
  }

  /** Throttled once ('reconnecting' with the 4029 reason), then open after the advised wait: two connections, never 'refused'. */
  function expectWaitedAndOpened(r: Awaited<ReturnType<typeof follow>>, scope: string) {
    expect(r.statuses.map((x) => x.s)).toEqual(['reconnecting', 'open']);
    const detail = r.statuses[0]!.detail!;
    expect(detail).toMatch(new RegExp(`^too many sign-in attempts \\(${scope}\\): retry after \\d+ s$`));
    const wait = retryAfterOfReason(detail)!;
    expect(wait).toBeGreaterThanOrEqual(1);
    // It waited as told (timers fire no earlier than asked: a little slack for the clock's rounding).
    expect(r.statuses[1]!.at - r.statuses[0]!.at).toBeGreaterThanOrEqual(wait * 1000 - 20);
    expect(r.connections).toBe(2);
  }

  it('a stream whose host is locked by another process\'s failed logins waits the advised seconds and opens with its password', { timeout: 20_000 }, async () => {
    const guesser = new EtfClient({ url: `http://127.0.0.1:${hostLimited.port}`, username: 'nobody', password: 'guess-1234', retries: 1 });
    for (let i = 0; i < 2; i++) await expect(guesser.holdings()).rejects.toMatchObject({ status: 401 });
    await expect(guesser.holdings()).rejects.toMatchObject({ status: 429, body: { error: { scope: 'login_address' } } });
    expectWaitedAndOpened(await follow(hostLimited.port), 'login_address');
  });

  it('a stream whose username\'s failure budget an attacker spent (a gateway that never saw its password) waits and opens', { timeout: 20_000 }, async () => {
    for (let i = 0; i < 2; i++) expect(await wrongLogin(userLimited.port, '127.0.0.2', 'team1')).toBe(401);
    expect(await wrongLogin(userLimited.port, '127.0.0.2', 'team1')).toBe(429);
    expectWaitedAndOpened(await follow(userLimited.port), 'login_user');
  });
});

describe('the client library stream while no engine answers', () => {
  it('backs off between sign-ins the gateway cannot check (1013), as between lost connections', { timeout: 30_000 }, async () => {
    // A gateway on a NATS server no engine is on: every socket opens, and its sign-in closes with 1013 after the request timeout.
    const lone = await startTestNats();
    const gw = await startGateway(testConfig(sys.dir.path, { requestTimeoutMs: 200 }), lone.url, quietLog);
    const at: number[] = [];
    const closes: string[] = [];
    const five = new Promise<void>((resolve) => {
      const stream = new EtfClient({ url: `http://127.0.0.1:${gw.port}`, username: 'team1', password: 'team1pass' }).stream({
        onStatus: (s) => {
          closes.push(s);
          at.push(Date.now());
          if (at.length === 5) {
            stream.close();
            resolve();
          }
        },
      });
    });
    try {
      await five;
    } finally {
      await gw.close();
      await lone.stop();
      lone.remove();
    }
    expect(closes).toEqual(Array(5).fill('reconnecting'));
    // The waits double (100, 200, 400, 800 ms) on top of each sign-in's 200 ms: before, every one was 100 ms.
    expect(at[4]! - at[3]!).toBeGreaterThanOrEqual(800);
  });

  it('the Python client (examples/python/etf_client.py) backs off too, and says why each time', { timeout: 30_000 }, async () => {
    const lone = await startTestNats();
    const gw = await startGateway(testConfig(sys.dir.path, { requestTimeoutMs: 200 }), lone.url, quietLog);
    // Three refused sign-ins, then out: the waits on_retry was told of, in order.
    const script = `import sys; sys.path.insert(0, ${JSON.stringify(join(PROJECT_ROOT, 'examples/python'))})
from etf_client import EtfClient
class Enough(Exception): pass
waits = []
def on_retry(err, wait):
    waits.append((err.status, err.code, wait))
    if len(waits) == 3: raise Enough()
try:
    for m in EtfClient("http://127.0.0.1:${gw.port}", "team1", "team1pass", on_retry=on_retry).stream(): pass
except Enough:
    pass
print(waits)`;
    try {
      const r = await run('python3', ['-c', script]);
      // Before: the wait started over at every socket that opened, so no engine meant a sign-in every 0.5 s, unreported.
      expect(r.stdout.trim()).toBe("[(503, 'engine_unavailable', 0.5), (503, 'engine_unavailable', 1.0), (503, 'engine_unavailable', 2.0)]");
    } finally {
      await gw.close();
      await lone.stop();
      lone.remove();
    }
  });
});
