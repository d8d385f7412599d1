import { expect, it } from 'vitest';
import { jetstream } from '@nats-io/jetstream';
import { encode } from '../proto/codec.js';
import type { DumpResult } from '../proto/engine.js';
import { JOURNAL_VERSION } from '../proto/journal.js';
import { JOURNAL_SUBJECT } from '../proto/subjects.js';
import { loadBaskets } from '../src/config/baskets.js';
import { consistencyCheck, describeReport } from '../src/engine/check.js';
import { startEngine } from '../src/engine/service.js';
import { EngineClient } from '../src/shared/engine-client.js';
import { buy, natsClient, quietLog, startTestNats, tempDir, testConfig, undyBasket } from './helpers/system.js';

/**
 * A stop (SIGTERM) that comes after a fault, while the fault notice is still
 * going out: the stop took its usual final snapshot, of a state holding the
 * group whose write failed (answered "unconfirmed"), labelled as the replay
 * of the journal, which does not hold it. The next start took that state for
 * the journal's: positions, the audit trail and the scoreboard disagreed.
 */
it('a stop after a fault saves no snapshot: the next start holds what the journal holds', async () => {
  const own = await startTestNats();
  const ownDir = tempDir();
  const bus = await natsClient(own.url);
  const cfg = testConfig(ownDir.path);
  let faulted!: () => void;
  const faultSeen = new Promise<void>((r) => (faulted = r));
  const engine = await startEngine(cfg, own.url, quietLog, () => faulted());
  const client = new EngineClient(bus, 5000);
  try {
    await buy(bus, 1, undyBasket(50));
    expect((await client.call({ op: 'create', clientId: 1, etf: 'UNDY', amount: 1, key: 'acknowledged' })).ok).toBe(true);
    // Another writer gets a record into the journal (a second engine by mistake): the engine's next write is refused.
    await jetstream(bus).publish(JOURNAL_SUBJECT, encode({ v: JOURNAL_VERSION, events: [{ t: 'operator', action: 'halt', etf: 'UNDY', reason: 'another writer', by: 'other', ts: Date.now() }] }));
    const refused = await client.call({ op: 'create', clientId: 1, etf: 'UNDY', amount: 1, key: 'unconfirmed' });
    expect(refused).toMatchObject({ ok: false, error: { code: 'engine_unavailable', why: 'unconfirmed' } });
    await faultSeen;
    await engine.close();

    const restarted = await startEngine(cfg, own.url, quietLog, (err) => {
      throw err;
    });
    try {
      const dump = await client.call({ op: 'dump' });
      if (!dump.ok) throw new Error(JSON.stringify(dump.error));
      expect(describeReport(await consistencyCheck(bus, dump.result as DumpResult, loadBaskets(undefined), quietLog))).toEqual([]);
      expect(await client.call({ op: 'request', clientId: 1, id: 'acknowledged' })).toMatchObject({ ok: true, result: { status: 'accepted' } });
      expect(await client.call({ op: 'request', clientId: 1, id: 'unconfirmed' })).toMatchObject({ ok: false, error: { code: 'not_found' } });
    } finally {
      await restarted.close();
    }
  } finally {
    client.close();
    await bus.close();
    await own.stop();
    own.remove();
    ownDir.remove();
  }
}, 30_000);
