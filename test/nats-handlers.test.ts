import { afterAll, beforeAll, expect, it } from 'vitest';
import { callbackThrows, connectNats } from '../src/shared/nats.js';
import { createLogger } from '../src/shared/log.js';
import { startTestNats } from './helpers/system.js';

/**
 * nats.js runs a subscription's callback inside its protocol parser: a throw
 * there ended the reader of the whole connection, and the process heard
 * nothing more on any subscription until its pings timed out. Every
 * connection connectNats opens catches it instead.
 */
let nats: Awaited<ReturnType<typeof startTestNats>>;
beforeAll(async () => {
  nats = await startTestNats();
});
afterAll(async () => {
  await nats?.stop();
  nats?.remove();
});

it('a subscription handler that throws costs only its message: the connection reads on, and the throw is logged and counted', async () => {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger('test', 'info', { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  const nc = await connectNats(nats.url, 'test-handlers', { waitForServer: false, log });
  try {
    const heard: string[] = [];
    let last!: () => void;
    const done = new Promise<void>((r) => (last = r));
    nc.subscribe('test.throws', {
      callback: () => {
        throw new Error('a handler bug');
      },
    });
    nc.subscribe('test.after', {
      callback: (_err, msg) => {
        heard.push(msg.string());
        if (heard.length === 2) last();
      },
    });
    // Both in one read: the second is parsed right after the throw, on the same reader.
    nc.publish('test.throws', 'x');
    nc.publish('test.after', 'first');
    nc.publish('test.throws', 'x');
    nc.publish('test.after', 'second');
    await done;
    expect(heard).toEqual(['first', 'second']);
    expect(callbackThrows(nc)).toBe(2);
    // The first throw of a subject logged, the second only counted (logs at 1, 10, 100...).
    const logged = lines.filter((l) => l.subject === 'test.throws');
    expect(logged).toEqual([expect.objectContaining({ level: 50, times: 1, err: expect.objectContaining({ message: 'a handler bug' }) })]);
  } finally {
    await nc.close();
  }
});
