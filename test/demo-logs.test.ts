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

describe('log format', () => {
  it('is pretty at a terminal and JSON through a pipe, unless LOG_FORMAT says otherwise', async () => {
    const { wantsPretty } = await import('../src/config/process.js');
    expect(wantsPretty({}, true)).toBe(true);
    expect(wantsPretty({}, false)).toBe(false);
    expect(wantsPretty({ LOG_FORMAT: 'json' }, true)).toBe(false);
    expect(wantsPretty({ LOG_FORMAT: 'pretty' }, false)).toBe(true);
  });

  it('pretty: one line per event, errors included, secrets redacted', async () => {
    const { prettyDestination } = await import('../src/shared/log.js');
    let out = '';
    const log = createLogger('gateway', 'info', prettyDestination({ write: (s: string) => (out += s) }));
    log.info({ port: 8080, password: 'hunter22' }, 'gateway listening');
    log.error({ err: new Error('boom') }, 'request failed');
    log.warn({ err: 'stream not found' }, 'no bucket');
    const lines = out.replace(/\x1b\[[0-9;]*m/g, '').split('\n').filter(Boolean);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: gateway: gateway listening \{"port":8080,"password":"\[redacted\]"\}$/);
    expect(lines[1]).toMatch(/ERROR: gateway: request failed \{"err":\{"type":"Error","message":"boom","stack":"Error: boom\\n/);
    expect(lines[2]).toContain('WARN: gateway: no bucket {"err":"stream not found"}');
    expect(out).not.toContain('hunter22');
  });
});
