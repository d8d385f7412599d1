import type { NatsConnection } from '@nats-io/transport-node';
import { createHash } from 'node:crypto';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { encode, decodeAs } from '../../proto/codec.js';
import { SNAPSHOT_CHUNK_BYTES, snapshotManifestShape, type SnapshotManifest } from '../../proto/streams.js';
import { shardNames, type ShardNames } from '../../proto/shards.js';
import { readStream } from '../shared/stream-reader.js';
import { ensureSnapshotStream } from '../shared/streams.js';
import { retryTransient } from '../shared/js-retry.js';
import { JS_HEADER_BYTES, maxPayload } from '../shared/nats.js';
import type { Logger } from '../shared/log.js';
import type { Instruments } from '../config/baskets.js';
import type { EngineState } from './state.js';
import { restoreSnapshot, SnapshotUnusable } from './snapshot.js';

/**
 * Where snapshots live: a JetStream stream of chunks plus a manifest, so the
 * engine keeps no local files. (The object store would do, but it hashes in
 * JavaScript at ~20 MB/s; node's native sha256 is two orders faster.)
 */
export class SnapshotStore {
  private readonly js: JetStreamClient;
  private constructor(
    private readonly jsm: JetStreamManager,
    private readonly nc: NatsConnection,
    private readonly names: ShardNames,
    private readonly log?: Logger,
  ) {
    this.js = jetstream(nc);
  }

  /** `names`: the engine shard's streams (proto/shards.ts); the single engine's by default. `replicas`: copies of a stream it creates. */
  static async open(nc: NatsConnection, log?: Logger, names: ShardNames = shardNames(0, 1), replicas = 1): Promise<SnapshotStore> {
    await ensureSnapshotStream(nc, names, replicas);
    const jsm = await jetstreamManager(nc);
    return new SnapshotStore(jsm, nc, names, log);
  }

  /**
   * One write of a snapshot, retried while JetStream is briefly unavailable (a
   * stream leader moving); publishes carry a message id, so a retried chunk is
   * stored once and the chunks stay contiguous.
   */
  private retry<T>(what: string, attempt: () => Promise<T>): Promise<T> {
    return retryTransient(`snapshot ${what}`, attempt, { deadlineMs: 30_000, ...(this.log ? { log: this.log } : {}) });
  }

  /**
   * The snapshot in force, or null when there is none. An unusable one (chunks
   * gone, size or sha256 mismatch) throws SnapshotUnusable: the caller logs why
   * and rebuilds from the journal, which is the truth; nothing waits forever.
   */
  async load(instruments?: Instruments): Promise<EngineState | null> {
    // No manifest is null (nats.js answers "no message found" so); a timeout is not "no snapshot", and is thrown.
    const last = await this.jsm.streams.getMessage(this.names.snapshotStream, { last_by_subj: this.names.snapshotManifest });
    if (!last) return null;
    const manifest = readManifest(last.data);
    const { state } = await this.jsm.streams.info(this.names.snapshotStream);
    if (state.first_seq > manifest.firstSeq || state.last_seq < manifest.lastSeq) {
      throw new SnapshotUnusable(`its chunks (stream sequences ${manifest.firstSeq}-${manifest.lastSeq}) are no longer in ${this.names.snapshotStream} (first ${state.first_seq}, last ${state.last_seq})`);
    }
    // A consumer delivers the chunks as raw bytes (the message API would base64 them through JSON).
    // Each is hashed and copied into place as it arrives, while the next ones are on their way: no second pass over hundreds of MB.
    const expected = manifest.lastSeq - manifest.firstSeq + 1;
    // A size its chunks cannot hold is a damaged manifest: refused before anything is allocated for it.
    if (!Number.isSafeInteger(manifest.bytes) || manifest.bytes < 0 || manifest.bytes > expected * SNAPSHOT_CHUNK_BYTES) throw new SnapshotUnusable(`its manifest says ${manifest.bytes} bytes in ${expected} chunks`);
    const bytes = Buffer.allocUnsafe(manifest.bytes);
    const hash = createHash('sha256');
    let chunks = 0;
    let filled = 0;
    let overflow = false;
    const reader = await readStream(
      this.nc,
      this.names.snapshotStream,
      manifest.firstSeq,
      (m) => {
        if (m.subject !== this.names.snapshotChunk || m.seq > manifest.lastSeq) return;
        chunks++;
        hash.update(m.data);
        if (filled + m.data.byteLength > bytes.byteLength) overflow = true;
        else bytes.set(m.data, filled);
        filled += m.data.byteLength;
      },
      { follow: false, untilSeq: manifest.lastSeq },
    );
    await reader.caughtUp;
    await reader.stop();
    if (chunks !== expected) throw new SnapshotUnusable(`${expected - chunks} of its ${expected} chunks are missing`);
    if (overflow || filled !== manifest.bytes || hash.digest('hex') !== manifest.sha256) throw new SnapshotUnusable('size or sha256 mismatch');
    return restoreSnapshot(bytes, instruments, { complete: true });
  }

  /** `snapshot`: its bytes, or its parts in order (SnapshotCapture.parts), stored as their concatenation. */
  async save(snapshot: Uint8Array | readonly Uint8Array[], journalSeq: number, takenAt: number): Promise<void> {
    const parts = snapshot instanceof Uint8Array ? [snapshot] : snapshot;
    let firstSeq = 0;
    let lastSeq = 0;
    let off = 0;
    const hash = createHash('sha256');
    // Unique to this save: a retried chunk is a duplicate, another save's chunk never is.
    const id = `snap-${journalSeq}-${takenAt}-${Math.random().toString(36).slice(2, 10)}`;
    // Smaller chunks on a server with a small max_payload: one of SNAPSHOT_CHUNK_BYTES was refused there, and no snapshot was ever saved.
    const chunkBytes = Math.min(SNAPSHOT_CHUNK_BYTES, maxPayload(this.nc) - JS_HEADER_BYTES);
    for (const chunk of chunksOf(parts, chunkBytes)) {
      hash.update(chunk);
      const ack = await this.retry('chunk', () => this.js.publish(this.names.snapshotChunk, chunk, { msgID: `${id}-${off}`, timeout: 5000 }));
      if (lastSeq !== 0 && ack.seq !== lastSeq + 1) throw new Error(`snapshot chunk stored at ${ack.seq}, not after ${lastSeq}: another writer interleaved`);
      if (firstSeq === 0) firstSeq = ack.seq;
      lastSeq = ack.seq;
      off += chunk.byteLength;
    }
    const manifest: SnapshotManifest = {
      v: 1,
      firstSeq,
      lastSeq,
      bytes: off,
      sha256: hash.digest('hex'),
      journalSeq,
      takenAt,
    };
    const data = encode(manifest);
    await this.retry('manifest', () => this.js.publish(this.names.snapshotManifest, data, { msgID: `${id}-manifest`, timeout: 5000 }));
    // Older snapshots are no longer needed: keep only this one's chunks and the newest manifest.
    // By count, not `seq: firstSeq`: nats-server 2.9 also deletes the message at `seq` when it is 1.
    // Purges are idempotent: a retried one removes nothing more.
    await this.retry('purge', () => this.jsm.streams.purge(this.names.snapshotStream, { filter: this.names.snapshotChunk, keep: lastSeq - firstSeq + 1 }));
    await this.retry('purge', () => this.jsm.streams.purge(this.names.snapshotStream, { filter: this.names.snapshotManifest, keep: 1 }));
  }
}

/** `parts` concatenated, cut into chunks of `size` bytes (the last one shorter; one empty chunk for no bytes), copying only where a chunk spans parts. */
export function* chunksOf(parts: readonly Uint8Array[], size: number): Generator<Uint8Array> {
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let yielded = false;
  const take = () => {
    const chunk = pending.length === 1 ? pending[0]! : Buffer.concat(pending);
    pending = [];
    pendingBytes = 0;
    yielded = true;
    return chunk;
  };
  for (const part of parts) {
    for (let off = 0; off < part.byteLength; ) {
      const n = Math.min(size - pendingBytes, part.byteLength - off);
      pending.push(part.subarray(off, off + n));
      pendingBytes += n;
      off += n;
      if (pendingBytes === size) yield take();
    }
  }
  if (pendingBytes > 0 || !yielded) yield pending.length === 0 ? new Uint8Array(0) : take();
}

/** A manifest that cannot be read makes the snapshot unusable, like a damaged chunk: the journal rebuilds the state. */
function readManifest(data: Uint8Array): SnapshotManifest {
  try {
    return decodeAs(data, snapshotManifestShape);
  } catch (err) {
    throw new SnapshotUnusable(`its manifest cannot be read (${err instanceof Error ? err.message : String(err)})`);
  }
}
