/**
 * The last `capacity` items of a contiguous sequence (item n has seq first+n),
 * for replaying what a reconnecting client missed. Fixed memory: a circular
 * array, no allocation per push once full.
 */
export class SeqRing<T> {
  private readonly items: (T | undefined)[];
  private head = 0;
  private count = 0;
  /** seq of the oldest item held; meaningful when count > 0. */
  private firstSeq = 0;

  constructor(readonly capacity: number) {
    this.items = new Array<T | undefined>(capacity);
  }

  get size(): number {
    return this.count;
  }

  /** Appends the item of `seq`; a seq that does not follow the last one restarts the ring. */
  push(seq: number, item: T): void {
    if (this.count > 0 && seq !== this.firstSeq + this.count) this.clear();
    if (this.count === 0) this.firstSeq = seq;
    if (this.count < this.capacity) {
      this.items[(this.head + this.count) % this.capacity] = item;
      this.count++;
    } else {
      this.items[this.head] = item;
      this.head = (this.head + 1) % this.capacity;
      this.firstSeq++;
    }
  }

  /**
   * Every item after `seq` up to `lastSeq` (the feed's current seq), or null
   * when some of them are no longer (or never were) held.
   */
  after(seq: number, lastSeq: number): T[] | null {
    if (seq === lastSeq) return [];
    if (seq > lastSeq || this.count === 0) return null;
    const lastHeld = this.firstSeq + this.count - 1;
    if (lastHeld !== lastSeq || seq + 1 < this.firstSeq) return null;
    const out: T[] = [];
    for (let s = seq + 1; s <= lastSeq; s++) out.push(this.items[(this.head + (s - this.firstSeq)) % this.capacity]!);
    return out;
  }

  clear(): void {
    this.items.fill(undefined);
    this.head = 0;
    this.count = 0;
  }
}
