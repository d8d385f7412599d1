import { expect, it } from 'vitest';
import { startEngine } from '../src/engine/service.js';
import { EngineClient } from '../src/shared/engine-client.js';
import { SnapshotStore } from '../src/engine/snapshot-store.js';
import { EngineActor } from '../src/engine/actor.js';
import { JournalWriter } from '../src/engine/journal.js';
import { emptyState } from '../src/engine/state.js';
import { loadBaskets } from '../src/config/baskets.js';
import { ensureJournalStream } from '../src/shared/streams.js';
import { decode } from '../proto/codec.js';
import { SNAPSHOT_MANIFEST_SUBJECT, type SnapshotManifest } from '../proto/streams.js';
import { natsClient, quietLog, startTestNats, tempDir, testConfig, until } from './helpers/system.js';

/**
 * A periodic snapshot is labelled with the journal sequence its state is the
 * replay of. When it was begun while the last group was still open (a second
 * write in flight keeps it from going out), that group took more commands
 * after the snapshot was imaged but was journaled under the snapshot's label:
 * a start from the snapshot replayed only what came after it, and lost them.
 * Journal writes are held here (the real writer, answered late) to make that
 * order happen every time.
 */
it('a command that joins the group open when a snapshot began is not lost by a start from that snapshot', async () => {
  const dir = tempDir();
  const nats = await startTestNats();
  const nc = await natsClient(nats.url);
  await ensureJournalStream(nc);
  const instruments = loadBaskets(undefined);
  const state = emptyState(instruments);
  const journal = new JournalWriter(nc, 0);
  const held: Array<() => void> = [];
  let holding = true;
  const append = journal.append.bind(journal);
  journal.append = (events, fills) => {
    const written = append(events, fills);
    if (!holding) return written;
    return new Promise<void>((r) => held.push(r)).then(() => written);
  };
  const saved: number[] = [];
  const manifests = nc.subscribe(SNAPSHOT_MANIFEST_SUBJECT, { callback: (_e, m) => void saved.push(decode<SnapshotManifest>(m.data).journalSeq) });
  const actor = new EngineActor(nc, state, { instruments, maxAmount: 1000 }, journal, quietLog, (err) => {
    throw err;
  }, { store: await SnapshotStore.open(nc), every: 1 });
  await actor.start();
  const client = new EngineClient(nc, 30_000);
  const register = (username: string) => client.call({ op: 'register', username, passwordHash: 'x' });
  const has = (username: string) => [...state.accounts.values()].some((a) => a.username === username);
  try {
    // Write 1 held; a full group (write 2) held behind it; two more commands wait in the open group.
    const first = register('first');
    await until(() => held.length === 1, 'the first write');
    const burst = Array.from({ length: 130 }, (_, i) => register(`burst${i}`));
    await until(() => held.length === 2 && has('burst129'), 'a full group in flight and an open one');
    // Write 1 answers: the snapshot begins, with the open group's two commands in it.
    held.shift()!();
    await first;
    // Another command joins the group that is still open.
    const late = register('late');
    await until(() => has('late'), 'the late command applied');
    holding = false;
    for (const release of held.splice(0)) release();
    await Promise.all([...burst, late]);
    const journalSeq = state.journalSeq;
    await until(() => saved.length > 0, 'a snapshot saved');
    // Cut off without a clean stop: the next start has that snapshot and the journal after it.
    manifests.unsubscribe();
    client.close();
    await nc.close();
    const engine = await startEngine(testConfig(dir.path, { roster: '' }), nats.url, quietLog, (err) => {
      throw err;
    });
    try {
      expect(engine.state.journalSeq).toBeGreaterThanOrEqual(journalSeq);
      const names = new Set([...engine.state.accounts.values()].map((a) => a.username));
      for (const u of ['first', 'burst0', 'burst129', 'late']) expect(names.has(u), u).toBe(true);
      expect(names.size).toBe(132);
    } finally {
      await engine.close();
    }
  } finally {
    await nats.stop();
    nats.remove();
    dir.remove();
  }
}, 60_000);
