import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { EtfClient, type HoldingsStream, type LiveHoldings } from '../src/client/index.js';
import { api, buy, fillsFor, killProcess, natsClient, publishFills, quietLog, spawnEngine, startTestNats, tempDir, testConfig } from './helpers/system.js';

const WAIT_MS = 15_000;
const t1: [string, string] = ['team1', 'team1pass'];

let nats: Awaited<ReturnType<typeof startTestNats>>;
let dir: ReturnType<typeof tempDir>;
let cfg: ReturnType<typeof testConfig>;
let engine: Awaited<ReturnType<typeof spawnEngine>>;
let gateway: GatewayHandle;
let nc: Awaited<ReturnType<typeof natsClient>>;
let http: ReturnType<typeof api>;

beforeAll(async () => {
  nats = await startTestNats();
  dir = tempDir();
  cfg = testConfig(dir.path);
  engine = await spawnEngine(nats.url, cfg);
  gateway = await startGateway(cfg, nats.url, quietLog);
  nc = await natsClient(nats.url);
  http = api(`http://127.0.0.1:${gateway.port}`);
});

afterAll(async () => {
  if (engine) await killProcess(engine);
  await nc?.close();
  await gateway?.close();
  await nats?.stop();
  nats?.remove();
  dir?.remove();
});

/** A client library stream of team1 that records what it applied and lets a test wait for a state. */
function follow() {
  const causes: string[] = [];
  const waiters = new Set<() => void>();
  const statuses: string[] = [];
  const stream: HoldingsStream = new EtfClient({ url: `http://127.0.0.1:${gateway.port}`, ...{ username: t1[0], password: t1[1] } }).stream({
    onHoldings: (_h, cause) => {
      causes.push(cause);
      for (const w of [...waiters]) w();
    },
    onStatus: (s) => {
      statuses.push(s);
      for (const w of [...waiters]) w();
    },
  });
  const when = (check: () => boolean, what: string) =>
    new Promise<void>((resolve, reject) => {
      const w = () => {
        if (!check()) return;
        waiters.delete(w);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        waiters.delete(w);
        reject(new Error(`timed out waiting for ${what} (stream at seq ${stream.seq}, causes ${causes.join(',')})`));
      }, WAIT_MS);
      waiters.add(w);
      w();
    });
  return { stream, causes, statuses, when };
}

const sameAsRest = (h: LiveHoldings, rest: { seq: number; holdings: Record<string, number> }) => h.seq === rest.seq && JSON.stringify(h.holdings) === JSON.stringify(rest.holdings);

describe('the holdings stream across an engine restart', () => {
  it('shows a fill the restarted engine applied while starting, and a resume after it misses nothing', { timeout: 60_000 }, async () => {
    await buy(nc, 1, { 3: 2 });
    const before = (await http.holdings(...t1)).body;
    expect(before.holdings).toMatchObject({ KNAN: 2 });
    const s = follow();
    try {
      await s.when(() => sameAsRest(s.stream.current, before), 'the stream at the first fill');

      // Stored while no engine runs: the restarted one applies it during its start, before anything listens for notices.
      await killProcess(engine);
      await publishFills(nc, fillsFor(1, { 3: 5 }));
      engine = await spawnEngine(nats.url, cfg);
      const after = (await http.holdings(...t1)).body;
      expect(after.seq).toBe(before.seq + 1);
      expect(after.holdings).toMatchObject({ KNAN: 7 });

      await s.when(() => s.stream.seq === after.seq, `the stream at seq ${after.seq}`);
      expect(s.stream.current.holdings).toEqual(after.holdings);
      expect(s.causes.at(-1)).toBe('snapshot');

      // The resume finds the gateway at the stream's seq: the next change follows as a plain delta, no snapshot needed.
      const opened = s.statuses.length;
      s.stream.drop();
      await s.when(() => s.statuses.slice(opened).includes('open'), 'the stream open again');
      const applied = s.causes.length;
      await publishFills(nc, fillsFor(1, { 3: 1 }));
      await s.when(() => s.stream.seq === after.seq + 1, `the stream at seq ${after.seq + 1}`);
      const last = (await http.holdings(...t1)).body;
      expect(s.stream.current.seq).toBe(last.seq);
      expect(s.stream.current.holdings).toEqual(last.holdings);
      expect(s.causes.slice(applied)).toEqual(['fill']);
      expect(s.stream.connections).toBe(2);
    } finally {
      s.stream.close();
    }
  });
});
