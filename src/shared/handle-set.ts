/** What a HandleSet holds for one item: emptied when the item leaves. */
export interface Handle<T> {
  item: T | null;
}

/**
 * A set of things that come and go many times a second (request bodies being
 * read, answers being written), each held through a handle that is emptied
 * when it leaves. V8 leaves a Set's or a Map's entries in the table it
 * rehashes away, and a long-lived set's tables are allocated in old space:
 * until the next full GC, such a stale entry kept what it held (a request,
 * and everything its handlers reach) alive through every scavenge, to be
 * promoted. An emptied handle keeps nothing (EngineClient.settle does the
 * same for its calls; test/handle-set.test.ts).
 */
export class HandleSet<T> {
  private readonly handles = new Set<Handle<T>>();

  add(item: T): Handle<T> {
    const h: Handle<T> = { item };
    this.handles.add(h);
    return h;
  }

  delete(h: Handle<T>): void {
    h.item = null;
    this.handles.delete(h);
  }

  /** Forgets every item at once (their handles emptied too). */
  clear(): void {
    for (const h of this.handles) h.item = null;
    this.handles.clear();
  }

  get size(): number {
    return this.handles.size;
  }

  /** The items in the set now, in the order they came (a copy: the caller may delete while going through it). */
  items(): T[] {
    const out: T[] = [];
    for (const h of this.handles) if (h.item !== null) out.push(h.item);
    return out;
  }
}
