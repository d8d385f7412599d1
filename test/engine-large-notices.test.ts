import { afterAll, beforeAll, expect, it } from 'vitest';
import { decodeRecords } from '../proto/codec.js';
import type { NoticeBatch } from '../proto/holdings.js';
import { NOTICES_SUBJECT_WILDCARD } from '../proto/subjects.js';
import type { Fill } from '../proto/fill.js';
import { natsClient, publishFills, startSystem, startTestNats, tempDir, testConfig, until, type TestSystem } from './helpers/system.js';

/**
 * Holdings notices over NATS's payload limit. An account holding many symbols
 * makes big changes, and a group of them in one notice batch passed the limit:
 * the publish threw and ended the engine, as an oversized answer batch did.
 * The server here allows 16 KB, so a few dozen such changes are enough.
 */
const dir = tempDir();
let nats: Awaited<ReturnType<typeof startTestNats>>;
let sys: TestSystem;

beforeAll(async () => {
  nats = await startTestNats(undefined, { maxPayload: 16384 });
  sys = await startSystem(nats.url, testConfig(dir.path, { snapshotEvery: 0 }));
}, 60_000);

afterAll(async () => {
  await sys?.close();
  await nats?.stop();
  nats?.remove();
  dir.remove();
});

it('go out in batches under the limit, every change once and in order, and the engine stays up', async () => {
  const nc = await natsClient(nats.url);
  const seqs: number[] = [];
  const sub = nc.subscribe(NOTICES_SUBJECT_WILDCARD, {
    callback: (_err, m) => {
      expect(m.data.byteLength).toBeLessThanOrEqual(16384);
      for (const c of decodeRecords<NoticeBatch>(m.data).changes) if (c.client_id === 1) seqs.push(c.seq);
    },
  });
  await nc.flush();
  // 100 symbols held, then 600 more fills at once: each change carries the 100 positions (several hundred bytes).
  let seq = 1;
  const fill = (symbol: number): Fill => ({ seq: seq++, client_id: 1, symbol, side: 1, quantity: 1, price: 100 });
  const fills = [...Array.from({ length: 100 }, (_, i) => fill(200 + i)), ...Array.from({ length: 600 }, (_, i) => fill(200 + (i % 100)))];
  await publishFills(nc, fills);
  await until(() => seqs.length >= fills.length || undefined, 'every change heard', 30_000);
  expect(seqs).toEqual(Array.from({ length: fills.length }, (_, i) => seqs[0]! + i));
  const ping = await sys.gateway.engine.call({ op: 'ping' });
  expect(ping.ok).toBe(true);
  sub.unsubscribe();
  await nc.close();
});
