import { describe, expect, it } from 'vitest';
import { HandleSet } from '../src/shared/handle-set.js';
import { heapFixture } from './helpers/heap.js';

describe('HandleSet', () => {
  it('holds items in order, and an item deleted while going through them is gone', () => {
    const set = new HandleSet<string>();
    const a = set.add('a');
    set.add('b');
    const c = set.add('c');
    expect(set.items()).toEqual(['a', 'b', 'c']);
    for (const item of set.items()) if (item === 'a') set.delete(c);
    set.delete(a);
    expect(set.items()).toEqual(['b']);
    expect(set.size).toBe(1);
    expect(a.item).toBeNull();
    const b = set.add('d');
    set.clear();
    expect(set.items()).toEqual([]);
    expect(b.item).toBeNull();
  });

  it('keeps nothing of the items that left through scavenges, where a plain Set keeps some until a full GC', () => {
    // A long-lived Set's rehashed tables are in old space and keep the entries they held: those survive scavenges and are promoted.
    const runs = [1, 2, 3];
    const handles = runs.map(() => heapFixture('handle-set-heap.js', 'handles'));
    for (const run of handles) expect(run.grew).toBeLessThan(run.held * 0.025);
    // The measurement sees what it is about: under the same churn a plain Set keeps several times more. How much
    // it keeps depends on when V8's collections fall during the churn (3 MB to 90 MB over runs; a loaded machine's
    // concurrent marking can free nearly all of it), so it is shown by the most of a few runs, not by each.
    const plainMost = Math.max(...runs.map(() => heapFixture('handle-set-heap.js', 'plain').grew));
    expect(plainMost).toBeGreaterThan(Math.max(...handles.map((run) => run.grew)) * 2);
  });
});
