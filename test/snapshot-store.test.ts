import { describe, expect, it } from 'vitest';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { encode, decode } from '../proto/codec.js';
import { shardNames } from '../proto/shards.js';
import { SNAPSHOT_CHUNK_BYTES } from '../proto/streams.js';
import { loadBaskets } from '../src/config/baskets.js';
import { emptyState, applyEvent } from '../src/engine/state.js';
import { SnapshotStore, SnapshotUnusable, takeSnapshot } from '../src/engine/snapshot.js';
import { useTestNats } from './helpers/system.js';

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
