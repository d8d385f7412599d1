import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtfClient, type StreamError } from '../src/client/index.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { killProcess, quietLog, spawnEngine, startTestNats, tempDir, testConfig } from './helpers/system.js';

/**
 * What the library's stream cannot do reaches its user: a subscription the
 * gateway refused (the team's prices and outcomes then never come), and why
 * a connection failed, not a bare 'reconnecting'.
 */
let nats: Awaited<ReturnType<typeof startTestNats>>;
let dir: ReturnType<typeof tempDir>;
let engine: Awaited<ReturnType<typeof spawnEngine>>;
let gateway: GatewayHandle;
let url: string;

beforeAll(async () => {
  nats = await startTestNats();
  dir = tempDir();
  const cfg = testConfig(dir.path);
  engine = await spawnEngine(nats.url, cfg);
  gateway = await startGateway(cfg, nats.url, quietLog);
  url = `http://127.0.0.1:${gateway.port}`;
});

afterAll(async () => {
  if (engine) await killProcess(engine);
  await gateway?.close();
  await nats?.stop();
  nats?.remove();
  dir?.remove();
});

describe('the client library stream', () => {
  it('hands the gateway\'s refusal of its subscription to onError', { timeout: 10_000 }, async () => {
    let stream!: ReturnType<EtfClient['stream']>;
    const refused = new Promise<StreamError>((resolve) => {
      stream = new EtfClient({ url, username: 'team1', password: 'team1pass' }).stream({ prices: ['UNDY', 'S&P 500'], onError: resolve });
    });
    try {
      expect(await refused).toMatchObject({ code: 'bad_message', message: expect.stringMatching(/ETF name/) });
    } finally {
      stream.close();
    }
  });

  it('without onError, the refusal is a process warning', { timeout: 10_000 }, async () => {
    const warned = new Promise<Error & { code?: string }>((resolve) => process.once('warning', resolve));
    const stream = new EtfClient({ url, username: 'team1', password: 'team1pass' }).stream({ prices: ['S&P 500'] });
    try {
      const w = await warned;
      expect(w.code).toBe('ETF_STREAM');
      expect(w.message).toMatch(/^bad_message: /);
    } finally {
      stream.close();
    }
  });

  it('says why it is reconnecting: a URL where no stream is', { timeout: 10_000 }, async () => {
    let stream!: ReturnType<EtfClient['stream']>;
    const status = new Promise<{ s: string; detail?: string }>((resolve) => {
      stream = new EtfClient({ url: `${url}/not-here`, username: 'team1', password: 'team1pass' }).stream({ onStatus: (s, detail) => resolve({ s, detail }) });
    });
    try {
      expect(await status).toEqual({ s: 'reconnecting', detail: expect.stringMatching(/404/) });
    } finally {
      stream.close();
    }
  });
});
