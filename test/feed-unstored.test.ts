import { expect, it } from 'vitest';
import { DiscardPolicy, jetstreamManager } from '@nats-io/jetstream';
import { FILL_STREAM } from '../proto/subjects.js';
import { api, until } from './helpers/system.js';
import { fillMsg, sendClearing, useBridgeWorld } from './helpers/feed.js';

const w = useBridgeWorld();

it('says on /health and /metrics when the fill stream stops storing the exchange\'s fills, and stops saying so once they are stored', async () => {
  const http = api(w.system.url);
  const knan = async () => (await http.send('GET', '/holdings', { basic: ['team1', 'team1pass'] })).body.holdings?.KNAN ?? 0;
  await sendClearing(w.sender, w.opts.clearing, [[fillMsg(1, 1, 3, 5)]]);
  await until(async () => (await knan()) === 5, 'the first fill applied');

  // The stream at its limit (as a full disk or a quota leaves it): JetStream refuses every further fill.
  const jsm = await jetstreamManager(w.nc);
  const { config, state } = await jsm.streams.info(FILL_STREAM);
  await jsm.streams.update(FILL_STREAM, { ...config, max_msgs: state.messages, discard: DiscardPolicy.New });
  await sendClearing(w.sender, w.opts.clearing, [[fillMsg(2, 1, 3, 7)]]);
  const told = await until(async () => {
    const h = await http.send('GET', '/health');
    return h.body.feed.unstored && h;
  }, 'the unstored fill on /health');
  expect(told.body.status).toBe('degraded');
  expect(told.body.feed.unstored).toMatchObject({ fills: 1, last_error: expect.stringMatching(/maximum messages/) });
  expect(told.body.problems).toContainEqual(expect.stringMatching(/^1 exchange fill\(s\) not stored in the fill stream for \d+ s \(.*maximum messages.*\): positions do not move/));
  expect(await fetch(`${w.system.url}/metrics`).then((r) => r.text())).toMatch(/^ndfex_feed_fills_unstored 1$/m);
  expect(await knan()).toBe(5);

  // Room again: the retried fill is stored under its msg id, applied, and /health no longer names it.
  await jsm.streams.update(FILL_STREAM, config);
  await until(async () => (await knan()) === 12, 'the retried fill applied');
  const cleared = await until(async () => {
    const h = await http.send('GET', '/health');
    return h.body.feed.unstored === undefined && h;
  }, 'the problem gone from /health');
  expect((cleared.body.problems ?? []).join('\n')).not.toMatch(/not stored/);
});
