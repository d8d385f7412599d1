import { describe, expect, it } from 'vitest';
import type { HoldingsNotice } from '../proto/holdings.js';
import type { OutcomeNotice } from '../proto/requests.js';
import { noticeBatches } from '../src/engine/notice-batches.js';

const change = (i: number, cause: HoldingsNotice['cause'] = 'fill'): HoldingsNotice => ({ client_id: 1, seq: i, cause, deltas: [], positions: [], cash: i, ts: 0 });
const outcome = (id: string): OutcomeNotice => ({ request_id: id, client_id: 1, op: 'create', etf: 'UNDY', amount: 1, status: 'accepted', ts: 0 });

/** Each batch as letters: c<seq> for a change, o<request> for an outcome, changes first as readers take them. */
const shape = (batches: ReturnType<typeof noticeBatches>) => batches.map((b) => [...b.changes.map((c) => `c${c.seq}`), ...b.outcomes.map((o) => `o${o.request_id}`)]);

describe('a group\'s notices in batches', () => {
  it('keeps a conversion\'s outcome in the batch of its change when fills fill the batch (before: the outcome went alone into the next)', () => {
    // 1,999 fills, then a create: its change is the 2,000th, a batch's last place.
    const changes = [...Array.from({ length: 1999 }, (_, i) => change(i + 1)), change(2000, 'create')];
    const batches = noticeBatches(changes, [outcome('r1')], [2000], 2000);
    expect(batches.map((b) => [b.changes.length, b.outcomes.length])).toEqual([[1999, 0], [1, 1]]);
    expect(batches[1]!.changes[0]!.cause).toBe('create');
  });

  it('keeps every notice once, in order, batches at most `max`, each outcome with its change or after it', () => {
    // Small batches: fills (f), conversions (a change and its outcome), refusals (an outcome alone), in a mixed order.
    const changes: HoldingsNotice[] = [];
    const outcomes: OutcomeNotice[] = [];
    const after: number[] = [];
    const conversions = new Set<OutcomeNotice>();
    const plan = 'ffcfrccffrcfffcrrcf';
    for (const [i, k] of [...plan].entries()) {
      if (k !== 'r') changes.push(change(changes.length + 1, k === 'c' ? 'create' : 'fill'));
      if (k !== 'f') {
        outcomes.push(outcome(`${i}`));
        after.push(changes.length);
        if (k === 'c') conversions.add(outcomes.at(-1)!);
      }
    }
    for (const max of [2, 3, 4, 5, 100]) {
      const batches = noticeBatches(changes, outcomes, after, max);
      expect(batches.every((b) => b.changes.length + b.outcomes.length <= max && b.changes.length + b.outcomes.length > 0)).toBe(true);
      expect(batches.flatMap((b) => b.changes)).toEqual(changes);
      expect(batches.flatMap((b) => b.outcomes)).toEqual(outcomes);
      // A conversion's change (the last change before its outcome) is in the outcome's batch.
      for (const [i, o] of outcomes.entries()) {
        if (!conversions.has(o)) continue;
        const batch = batches.find((b) => b.outcomes.includes(o))!;
        expect(batch.changes, `${max}: ${JSON.stringify(shape(batches))}`).toContain(changes[after[i]! - 1]);
      }
    }
  });
});
