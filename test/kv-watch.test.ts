import { describe, expect, it } from 'vitest';
import { Kvm, type KvWatchEntry } from '@nats-io/kv';
import type { QueuedIterator } from '@nats-io/transport-node';
import { watchBucket, type WatchOptions } from '../src/shared/kv-watch.js';
import { encode } from '../proto/codec.js';
import { createLogger } from '../src/shared/log.js';
import { quietLog, useTestNats } from './helpers/system.js';
import { isMap, isNum, shape } from '../proto/shape.js';

/** The entries these tests write ({n}); every watch checks what it decodes. */
const counter = shape<{ n: number }>('counter', (v) => (isMap(v) && isNum(v.n) ? null : 'n: not a number'));

/**
 * A bucket watch (GET /etfs, marks, pricing) must come back by itself when
 * its consumer is lost with the node holding it, even when the lost watch
 * neither delivers again nor ends when told to stop.
 */
/** Follows `bucket` with watches opened by `open`: every value heard, in order, and a wait for one of them. */
function follow(bus: { nc: Parameters<typeof watchBucket>[0] }, bucket: string, open: WatchOptions['open']) {
  const values: number[] = [];
  let waiting: { value: number; resolve: () => void } | null = null;
  const watch = watchBucket<{ n: number }>(
    bus.nc,
    bucket,
    quietLog,
    counter,
    (_key, v) => {
      if (!v) return;
      values.push(v.n);
      if (waiting?.value === v.n) waiting.resolve();
    },
    { open },
  );
  const heard = (value: number) => new Promise<void>((resolve) => (values.includes(value) ? resolve() : (waiting = { value, resolve })));
  return { values, heard, close: () => watch.close() };
}

describe('bucket watch', () => {
  const bus = useTestNats();

  it('watches again when its watch goes silent and does not end on stop, and ignores that watch from then on', async () => {
    const kv = await new Kvm(bus.nc).create('watch_lost');
    let opened = 0;
    let lost = false;
    /** Set when the lost watch hands over an entry after all (it must not be applied). */
    let stale: unknown = null;
    const open = async (bucket: typeof kv): Promise<QueuedIterator<KvWatchEntry>> => {
      const real = await bucket.watch();
      if (opened++ > 0) return real;
      // The first watch, once "its node died": silent, and stop() does not end it.
      let release: (() => void) | null = null;
      const lostWatch = {
        stop: () => {},
        async *[Symbol.asyncIterator]() {
          for await (const e of real) {
            if (lost) {
              await new Promise<void>((r) => (release = r));
              stale = e.value;
            }
            yield e;
          }
        },
      };
      afterLoss = () => release?.();
      return lostWatch as unknown as QueuedIterator<KvWatchEntry>;
    };
    let afterLoss = () => {};
    const { values: seen, heard, close } = follow(bus, 'watch_lost', open);
    try {
      await kv.put('k', encode({ n: 1 }));
      await heard(1);
      lost = true;
      await kv.put('k', encode({ n: 2 }));
      await heard(2);
      expect(opened).toBeGreaterThan(1);
      // The lost watch wakes up late with an older value: it is not applied over the newer one.
      await kv.put('k', encode({ n: 3 }));
      await heard(3);
      afterLoss();
      await new Promise((r) => setImmediate(r));
      expect(stale).not.toBeNull();
      expect(seen.at(-1)).toBe(3);
    } finally {
      close();
    }
  }, 30_000);

  it('watches again when opening a new watch never finishes (an election under way)', async () => {
    const kv = await new Kvm(bus.nc).create('watch_hung');
    let opened = 0;
    let lost = false;
    const open = async (bucket: typeof kv): Promise<QueuedIterator<KvWatchEntry>> => {
      const n = opened++;
      // The second open hangs for good; the others are real.
      if (n === 1) return new Promise<QueuedIterator<KvWatchEntry>>(() => {});
      const real = await bucket.watch();
      if (n > 0) return real;
      // The first watch goes silent once "its node died", and ends when stopped.
      let ended: (() => void) | null = null;
      const silent = {
        stop: () => {
          real.stop();
          ended?.();
        },
        async *[Symbol.asyncIterator]() {
          for await (const e of real) {
            if (lost) return void (await new Promise<void>((r) => (ended = r)));
            yield e;
          }
        },
      };
      return silent as unknown as QueuedIterator<KvWatchEntry>;
    };
    const { heard, close } = follow(bus, 'watch_hung', open);
    try {
      await kv.put('k', encode({ n: 1 }));
      await heard(1);
      lost = true;
      await kv.put('k', encode({ n: 2 }));
      await heard(2);
      expect(opened).toBeGreaterThan(2);
    } finally {
      close();
    }
  }, 30_000);

  it('says so at error level when its handler throws, and goes on with the next entries', async () => {
    const kv = await new Kvm(bus.nc).create('watch_throws');
    const lines: { level: number; key?: string; msg: string }[] = [];
    const log = createLogger('test', 'info', { write: (l: string) => void lines.push(JSON.parse(l) as { level: number; key?: string; msg: string }) });
    const values: number[] = [];
    const waits = new Map<number, () => void>();
    const heard = (n: number) => new Promise<void>((r) => (values.includes(n) ? r() : waits.set(n, r)));
    const watch = watchBucket<{ n: number }>(bus.nc, 'watch_throws', log, counter, (key, v) => {
      if (key === 'bad') throw new Error('handler bug');
      values.push(v!.n);
      waits.get(v!.n)?.();
    });
    try {
      await kv.put('good', encode({ n: 1 }));
      // The watch is open (it heard the first value) before the throwing entry comes.
      await heard(1);
      await kv.put('bad', encode({ n: 0 }));
      await kv.put('good', encode({ n: 2 }));
      await heard(2);
      // Heard once each, in order: the watch was not torn down and started again over the throw.
      expect(values).toEqual([1, 2]);
      expect(lines.filter((l) => l.level >= 50)).toMatchObject([{ key: 'bad', msg: 'bucket entry handler failed' }]);
    } finally {
      watch.close();
    }
  });
});
