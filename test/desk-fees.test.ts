import { describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { encodeRecords } from '../proto/codec.js';
import type { HoldingsNotice } from '../proto/holdings.js';
import type { OutcomeNotice } from '../proto/requests.js';
import type { Scorecard } from '../proto/http.js';
import { DESK_STREAM } from '../proto/subjects.js';
import { shardNames } from '../proto/shards.js';
import { loadBaskets } from '../src/config/baskets.js';
import { startEngine } from '../src/engine/service.js';
import { DeskRecorder } from '../src/pricing/desk.js';
import { DeskHistory } from '../src/shared/desk-history.js';
import { readStream } from '../src/shared/stream-reader.js';
import { buy, natsClient, quietLog, testConfig, undyBasket, until, useSystem } from './helpers/system.js';

const RULES = { fees: { create: { fixed: 5, per_unit: 2 }, redeem: { fixed: 0, per_unit: 1 } } };
const SHARDS = 2;
// team2 (client 2) is shard 0's; shard 1 (team1's) is the one stopped below.
const TEAM2 = 2;

/** The desk stream's card for a conversion, once the desk has written it. */
function cardOf(nc: NatsConnection, clientId: number, requestId: string): Promise<Scorecard> {
  return until(async () => {
    const held = new DeskHistory(Infinity);
    await (await readStream(nc, DESK_STREAM, 1, (m) => held.apply(m.subject, m.data), { follow: false })).caughtUp;
    return held.scorecard(clientId, requestId);
  }, `the scorecard of ${requestId}`);
}

describe("the desk scores each conversion with the fee the engine charged", () => {
  const overrides = { chartSampleMs: 100, rules: RULES, engine: { shards: SHARDS } };
  const f = useSystem(overrides, 1, { desk: true });

  async function startDesk(): Promise<{ desk: DeskRecorder; close(): Promise<void> }> {
    const nc = await natsClient(f.nats.url);
    const desk = await DeskRecorder.start(nc, loadBaskets(undefined), quietLog, { sampleMs: 100, shards: SHARDS, auto: false });
    return { desk, close: async () => (await desk.close(), await nc.close()) };
  }

  it('restarted while an engine shard is down, an account it could not read yet is charged its fee (it was charged its whole debt)', async () => {
    // Signed in while every shard answers: the gateway keeps the check, so the create below needs shard 0 alone.
    expect((await f.http.holdings('team2', 'team2pass')).status).toBe(200);
    // Bought while the pricing service is down: cash −2,000 that the restarted desk can learn only from the engines' dump.
    await f.sys.desk!.close();
    await buy(f.nc, TEAM2, undyBasket(2));
    await f.sys.engines[1]!.close();
    const restarted = await startDesk();
    try {
      const created = await f.http.create('team2', 'team2pass', 2);
      expect(created.status).toBe(200);
      const fee = 5 + 2 * 2;
      expect(created.body.fee).toBe(fee);
      // Inferred from the cash, the fee was 0 − (−2,000 − 9): the account, unknown, started from cash 0.
      expect(await cardOf(f.nc, TEAM2, created.body.request_id)).toMatchObject({ op: 'create', amount: 2, fee });
    } finally {
      await restarted.close();
      f.sys.engines[1] = await startEngine({ ...testConfig(f.dir.path, overrides), engine: { shards: SHARDS, shard: 1 } }, f.nats.url, quietLog, (err) => {
        throw err;
      });
    }
  });

  it("reads an older engine's notice batch (version 2, no fee in the outcome) and takes the fee from the cash change beside it, as before", async () => {
    const d = await startDesk();
    try {
      await d.desk.refreshAccounts();
      const now = (await f.http.holdings('team2', 'team2pass')).body;
      // What an engine of notice batches version 2 published for a create of 1 UNDY with a fee of 7.
      const change: HoldingsNotice = { client_id: TEAM2, seq: now.seq + 1, cause: 'create', deltas: [13, 1], positions: [13, 3], cash: now.cash - 7, ts: Date.now() };
      const outcome: OutcomeNotice = { request_id: 'r900', client_id: TEAM2, op: 'create', etf: 'UNDY', amount: 1, status: 'accepted', ts: change.ts, client_request_id: 'old-engine', deltas: [13, 1] };
      f.nc.publish(shardNames(0, SHARDS).notices, encodeRecords({ v: 2, changes: [change], outcomes: [outcome] }));
      expect(await cardOf(f.nc, TEAM2, 'r900')).toMatchObject({ op: 'create', amount: 1, fee: 7 });
    } finally {
      await d.close();
    }
  });
});
