import { describe, expect, it } from 'vitest';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { readStream } from '../src/shared/stream-reader.js';
import { isStreamNotFound } from '../src/shared/js-errors.js';
import { quietLog, useTestNats } from './helpers/system.js';

/**
 * A follower either reads or tells its owner (issue 21): a reader that cannot
 * go on (its stream deleted) stops with the cause instead of retrying, or
 * ending, without a word.
 */
describe('stream follower', () => {
  const bus = useTestNats();

  it('tells its owner when its stream is gone for good, with the cause', async () => {
    const jsm = await jetstreamManager(bus.nc);
    await jsm.streams.add({ name: 'FOLLOWED', subjects: ['followed.>'] });
    const js = jetstream(bus.nc);
    await js.publish('followed.a', new Uint8Array([1]));
    const seen: number[] = [];
    let failed!: (err: unknown) => void;
    const stopped = new Promise<unknown>((r) => (failed = r));
    const follower = await readStream(bus.nc, 'FOLLOWED', 1, (m) => void seen.push(m.seq), { follow: true, onError: (err) => failed(err), log: quietLog, giveUpMs: 500 });
    try {
      await follower.caughtUp;
      expect(seen).toEqual([1]);
      await jsm.streams.delete('FOLLOWED');
      const err = await stopped;
      expect(isStreamNotFound(err), String(err)).toBe(true);
    } finally {
      await follower.stop();
    }
  });
});
