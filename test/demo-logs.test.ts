import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { JsMsg } from '@nats-io/jetstream';
import { encode } from '../proto/codec.js';
import type { Fill } from '../proto/fill.js';
import { fillSubject } from '../proto/subjects.js';
import { applyFillMessage, emptyFillStats } from '../src/engine/fill-feed.js';
import { emptyState } from '../src/engine/state.js';
import { createLogger } from '../src/shared/log.js';

/** What a clean demo's engine logs: the simulator's market makers (no accounts) are filled all the time. */
describe('engine logs in a clean demo', () => {
  it('reports each unknown client_id once, at info, however many of its fills arrive', () => {
    const lines: { level: number; msg: string }[] = [];
    const sink = new Writable({ write: (chunk, _e, done) => (lines.push(JSON.parse(String(chunk))), done()) });
    const log = createLogger('engine', 'info', sink);
    const state = emptyState();
    const stats = emptyFillStats();
    for (let seq = 1; seq <= 3000; seq++) {
      const fill: Fill = { seq, client_id: 9101 + (seq % 3), symbol: 3, side: 1, quantity: 1, price: 100 };
      // Only the fields applyFillMessage reads: what the JetStream consumer hands it.
      applyFillMessage(state, { seq, subject: fillSubject(fill.client_id), data: encode(fill) } as unknown as JsMsg, stats, log);
    }
    expect(stats.unknownAccount).toBe(3000);
    expect(lines.filter((l) => l.level >= 40)).toEqual([]);
    expect(lines.map((l) => l.msg)).toHaveLength(3);
  });
});
