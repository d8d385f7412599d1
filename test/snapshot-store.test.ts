import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { encode, decode } from '../proto/codec.js';
import { shardNames } from '../proto/shards.js';
import { SNAPSHOT_CHUNK_BYTES } from '../proto/streams.js';
import { loadBaskets } from '../src/config/baskets.js';
import { emptyState, applyEvent } from '../src/engine/state.js';
import { SnapshotCapture, SnapshotUnusable, restoreSnapshot, snapshotPackr, takeSnapshot } from '../src/engine/snapshot.js';
import { SnapshotStore, chunksOf } from '../src/engine/snapshot-store.js';
import { natsClient, startTestNats, useTestNats } from './helpers/system.js';

/**
 * A snapshot is read chunk by chunk, each hashed and copied into place as it
 * arrives; a snapshot whose bytes do not match its manifest is refused (the
 * engine then replays the journal), never half-used.
 */
describe('snapshot store', () => {
  const bus = useTestNats();
  const names = shardNames(0, 1);
  const instruments = loadBaskets(undefined);


  /** A state whose snapshot spans several chunks. */
  function bigState() {
    const s = emptyState(instruments);
    for (let id = 1; id <= 300; id++) applyEvent(s, { t: 'account', clientId: id, username: `team-${id}-${'x'.repeat(4000)}`, source: 'roster', opening: [[3, id]], ts: 0 });
    return s;
  }

  it('loads a snapshot of several chunks to the same state', async () => {
    const store = await SnapshotStore.open(bus.nc, undefined, names);
    const s = bigState();
    const bytes = takeSnapshot(s, 7, 1);
    expect(bytes.byteLength).toBeGreaterThan(2 * SNAPSHOT_CHUNK_BYTES);
    await store.save(bytes, 7, 1);
    const loaded = (await store.load(instruments))!;
    expect(loaded.journalSeq).toBe(7);
    expect(loaded.accounts.size).toBe(300);
    expect(loaded.accounts.get(300)!.username).toBe(s.accounts.get(300)!.username);
  });

  it('stores a snapshot given as parts (packed slice by slice) as their concatenation', async () => {
    const store = await SnapshotStore.open(bus.nc, undefined, names);
    const s = bigState();
    const capture = new SnapshotCapture(s, 8, 2);
    capture.step(Infinity);
    while (!capture.pack(1));
    const parts = capture.parts();
    expect(parts.length).toBeGreaterThan(2);
    expect(Buffer.concat(parts).equals(Buffer.from(takeSnapshot(s, 8, 2)))).toBe(true);
    await store.save(parts, 8, 2);
    const loaded = (await store.load(instruments))!;
    expect(loaded.journalSeq).toBe(8);
    expect([...loaded.accounts.keys()]).toEqual([...s.accounts.keys()]);
  });

  it('cuts parts into chunks of the chunk size, whatever their own sizes', () => {
    const whole = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
    const parts = [whole.subarray(0, 3), whole.subarray(3, 3), whole.subarray(3, 700), whole.subarray(700)];
    const chunks = [...chunksOf(parts, 64)];
    expect(chunks.map((c) => c.byteLength)).toEqual([...Array<number>(15).fill(64), 40]);
    expect(Buffer.concat(chunks).equals(whole)).toBe(true);
    expect([...chunksOf([], 64)].map((c) => c.byteLength)).toEqual([0]);
    expect([...chunksOf([whole.subarray(0, 128)], 64)].map((c) => c.byteLength)).toEqual([64, 64]);
  });

  it('calls a snapshot unusable when it holds fewer slices of accounts than it says', () => {
    const bytes = Buffer.from(takeSnapshot(bigState(), 3, 1));
    const head = snapshotPackr.unpackMultiple(bytes)![0] as { slices: number };
    const cut = Buffer.concat([Buffer.from(snapshotPackr.pack(head)), Buffer.from(snapshotPackr.pack([]))]);
    expect(() => restoreSnapshot(cut, instruments)).toThrow(SnapshotUnusable);
  });

  it('refuses a snapshot whose bytes do not match its manifest (size, then hash)', async () => {
    const store = await SnapshotStore.open(bus.nc, undefined, names);
    const js = jetstream(bus.nc);
    const last = await (await jetstreamManager(bus.nc)).streams.getMessage(names.snapshotStream, { last_by_subj: names.snapshotManifest });
    const manifest = decode<Record<string, unknown>>(last!.data);
    await js.publish(names.snapshotManifest, encode({ ...manifest, bytes: (manifest.bytes as number) + 1 }));
    await expect(store.load(instruments)).rejects.toBeInstanceOf(SnapshotUnusable);
    await js.publish(names.snapshotManifest, encode({ ...manifest, bytes: (manifest.bytes as number) - 1 }));
    await expect(store.load(instruments)).rejects.toBeInstanceOf(SnapshotUnusable);
    await js.publish(names.snapshotManifest, encode({ ...manifest, bytes: 1e12 }));
    await expect(store.load(instruments)).rejects.toThrow(/manifest says/);
    await js.publish(names.snapshotManifest, encode({ ...manifest, sha256: '0'.repeat(64) }));
    await expect(store.load(instruments)).rejects.toThrow(/sha256/);
  });
});

/**
 * Chunks were SNAPSHOT_CHUNK_BYTES (512 KB) whatever the server took: on one
 * with a smaller max_payload the first chunk's publish was refused, no
 * snapshot was ever saved, and every start replayed the whole journal.
 */
describe('snapshot store on a server with a small max_payload', () => {
  const LIMIT = 4096;
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let nc: NatsConnection;
  beforeAll(async () => {
    nats = await startTestNats(undefined, { maxPayload: LIMIT });
    nc = await natsClient(nats.url);
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
    nats?.remove();
  });

  it('saves a snapshot in chunks the server takes, and loads it to the same state', async () => {
    const instruments = loadBaskets(undefined);
    const names = shardNames(0, 1);
    const store = await SnapshotStore.open(nc, undefined, names);
    const s = emptyState(instruments);
    for (let id = 1; id <= 40; id++) applyEvent(s, { t: 'account', clientId: id, username: `team-${id}-${'y'.repeat(200)}`, source: 'roster', opening: [[3, id]], ts: 0 });
    const bytes = takeSnapshot(s, 9, 1);
    expect(bytes.byteLength).toBeGreaterThan(2 * LIMIT);
    await store.save(bytes, 9, 1);
    const loaded = (await store.load(instruments))!;
    expect(loaded.journalSeq).toBe(9);
    expect(Buffer.from(takeSnapshot(loaded, 9, 1)).equals(Buffer.from(bytes))).toBe(true);
  });
});
