import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { EtfApiError, EtfClient } from '../src/client/index.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { buy, quietLog, testConfig, undyBasket, useSystem } from './helpers/system.js';

const sys = useSystem();

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
