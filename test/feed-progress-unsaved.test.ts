import { expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { decode } from '../proto/codec.js';
import { FEED_BUCKET, FEED_CLEARING_KEY, type ClearingSessionRecord } from '../proto/feed.js';
import { api, until } from './helpers/system.js';
import { fillMsg, sendClearing, useBridgeWorld } from './helpers/feed.js';

/**
 * The clearing session record the bridge saves as it goes (how far it got, the
 * session's sender) is what the standby follows and a restart resumes from.
 * A bucket that refuses it was a warning in the bridge's log every tick, and
 * /health said nothing.
 */
const w = useBridgeWorld();

it('says on /health when the clearing progress cannot be saved, and stops once it is saved again', async () => {
  const http = api(w.system.url);
  const kv = await new Kvm(w.nc).open(FEED_BUCKET);
  const savedSeq = async () => {
    const e = await kv.get(FEED_CLEARING_KEY);
    return e ? decode<ClearingSessionRecord>(e.value).last_seq : 0;
  };
  await sendClearing(w.sender, w.opts.clearing, [[fillMsg(1, 1, 3, 5)]]);
  await until(async () => (await savedSeq()) === 1, 'the progress saved');

  // The bucket refuses the record (as a quota, a full disk or a size limit does); the fills themselves still go through.
  const jsm = await jetstreamManager(w.nc);
  const stream = `KV_${FEED_BUCKET}`;
  const { config } = await jsm.streams.info(stream);
  await jsm.streams.update(stream, { ...config, max_msg_size: 16 });
  await sendClearing(w.sender, w.opts.clearing, [[fillMsg(2, 1, 3, 7)]]);
  const told = await until(async () => {
    const h = await http.send('GET', '/health');
    return (h.body.problems as string[] | undefined)?.some((p) => p.startsWith('progress_unsaved')) && h;
  }, 'the unsaved progress on /health');
  expect(told.body.status).toBe('degraded');
  expect(told.body.problems).toContainEqual(
    expect.stringMatching(/^progress_unsaved on clearing \[progress-unsaved, operator: ack\]: the clearing session record .* has not been saved for \d+ s, \d+ attempt\(s\): .*message size exceeds maximum allowed.*The standby follows that record/),
  );
  expect(w.bridge.stats().status.progress_unsaved).toMatchObject({ attempts: expect.any(Number), last_error: expect.stringMatching(/message size exceeds/) });
  // As a field a script reads, and on /metrics.
  expect(told.body.feed.progress_unsaved).toMatchObject({ for_ms: expect.any(Number), last_error: expect.stringMatching(/message size exceeds/) });
  const unsavedSeconds = async () => Number(/^ndfex_feed_progress_unsaved_seconds (\S+)$/m.exec(await fetch(`${w.system.url}/metrics`).then((r) => r.text()))?.[1]);
  expect(await unsavedSeconds()).toBeGreaterThan(0);
  expect(await savedSeq()).toBe(1);

  // The limit lifted: the next tick saves, and the problem goes.
  await jsm.streams.update(stream, config);
  await until(async () => (await savedSeq()) === 2, 'the progress saved again');
  const cleared = await until(async () => {
    const h = await http.send('GET', '/health');
    return !(h.body.problems as string[] | undefined)?.some((p) => p.startsWith('progress_unsaved')) && h;
  }, 'the problem gone from /health');
  expect(cleared.body.feed.problems ?? []).toEqual([]);
  expect(cleared.body.feed.progress_unsaved).toBeUndefined();
  expect(await unsavedSeconds()).toBe(0);
  expect(w.bridge.stats().status.progress_unsaved).toBeUndefined();
});
