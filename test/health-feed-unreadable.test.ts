import { expect, it } from 'vitest';
import { FEED_STATUS_SUBJECT } from '../proto/marketdata.js';
import { encode } from '../proto/codec.js';
import { until, useSystem } from './helpers/system.js';

const f = useSystem();

it('a bridge whose status does not read (another version) is said to be so on /health, not taken for a bridge that is down', async () => {
  expect((await f.http.send('GET', '/health')).body.problems).toContainEqual(expect.stringMatching(/^the feed bridge has not reported/));
  // Counters renamed, as a bridge of another version might send them.
  const status = { clearing: { datagrams: 1, msgs: 1 }, market_data: { datagrams: 1, msgs: 1 }, ts: Date.now() };
  const told = await until(async () => {
    f.nc.publish(FEED_STATUS_SUBJECT, encode(status));
    const h = await f.http.send('GET', '/health');
    return h.body.problems?.some((p: string) => /does not read/.test(p)) && h;
  }, 'the unreadable status on /health');
  expect(told.body.status).toBe('degraded');
  expect(told.body.problems).toEqual([expect.stringMatching(/^the feed bridge's status does not read \(clearing\.messages: not a number; \d+ so far\): is the bridge another version than this gateway\?/)]);
});
