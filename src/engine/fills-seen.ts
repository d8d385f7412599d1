/**
 * The exchange seqs of the fills applied, per exchange session (the session a
 * bridge's msg id `fill-<session>-<seq>` names). NDFEX sends a seq once per
 * session, so a second fill stored under the same session and seq is a copy:
 * JetStream drops a repeated msg id only within its duplicate window (an
 * hour), and a copy stored after it (a recorded datagram replayed from the
 * exchange's own socket after a bridge restart, a held run published again
 * by a bridge started the next day) would be applied twice. The engine skips
 * it, in the live feed, the replay and the consistency check alike.
 *
 * One bit per seq, in blocks of BLOCK_BITS kept only where seqs fell: a
 * session of a million fills is 125 KB, and a far seq the operator let
 * through costs one block, not the span up to it.
 */
const BLOCK_BITS = 4096;
const WORDS = BLOCK_BITS / 32;
/** Sessions kept: the current one and the one before (a standby's fills of the old session are stale already). */
const SESSIONS_KEPT = 2;

/** In snapshots: per session, its blocks as [index, words]. */
export type FillsSeenImage = [session: number, blocks: [index: number, words: number[]][]][];

export class FillsSeen {
  private readonly sessions = new Map<number, Map<number, Uint32Array>>();

  has(session: number, seq: number): boolean {
    const block = this.sessions.get(session)?.get(Math.floor(seq / BLOCK_BITS));
    const bit = seq % BLOCK_BITS;
    return block !== undefined && (block[bit >>> 5]! & (1 << (bit & 31))) !== 0;
  }

  add(session: number, seq: number): void {
    let blocks = this.sessions.get(session);
    if (!blocks) {
      blocks = new Map();
      this.sessions.set(session, blocks);
      this.keepNewest();
    }
    const index = Math.floor(seq / BLOCK_BITS);
    let block = blocks.get(index);
    if (!block) blocks.set(index, (block = new Uint32Array(WORDS)));
    const bit = seq % BLOCK_BITS;
    block[bit >>> 5] = block[bit >>> 5]! | (1 << (bit & 31));
  }

  /** A session's fills stored after a later session began are stale already (fill-feed.ts): their seqs need not be kept. */
  forgetBefore(session: number): void {
    for (const s of this.sessions.keys()) if (s < session) this.sessions.delete(s);
  }

  private keepNewest(): void {
    const order = [...this.sessions.keys()].sort((a, b) => a - b);
    for (const s of order.slice(0, Math.max(0, order.length - SESSIONS_KEPT))) this.sessions.delete(s);
  }

  toImage(): FillsSeenImage {
    return [...this.sessions].map(([session, blocks]) => [session, [...blocks].map(([i, words]) => [i, [...words]])]);
  }

  static fromImage(image: FillsSeenImage): FillsSeen {
    const seen = new FillsSeen();
    for (const [session, blocks] of image) seen.sessions.set(session, new Map(blocks.map(([i, words]) => [i, Uint32Array.from(words)])));
    return seen;
  }
}
