import type { NatsConnection } from '@nats-io/transport-node';
import { Objm, type ObjectStore } from '@nats-io/obj';
import { encode, decode } from '../../proto/codec.js';
import type { Delta } from '../../proto/journal.js';
import { SNAPSHOT_BUCKET, SNAPSHOT_OBJECT } from '../../proto/streams.js';
import { emptyState, type Account, type AuditEvent, type EngineState } from './state.js';

export const SNAPSHOT_VERSION = 1;

interface AccountImage {
  clientId: number;
  username: string;
  source: Account['source'];
  /** Registered accounts only: roster passwords are hashed from the roster at each start. */
  passwordHash?: string;
  positions: Delta[];
  version: number;
  history: AuditEvent[];
}

export interface EngineSnapshot {
  v: number;
  journalSeq: number;
  fillSeq: number;
  requestSeq: number;
  maxClientId: number;
  takenAt: number;
  accounts: AccountImage[];
}

/** Serializes the state as the replay of `journalSeq` (which may be ahead of what is durable yet: see the actor). */
export function takeSnapshot(state: EngineState, journalSeq: number, now: number): Uint8Array {
  const accounts: AccountImage[] = [...state.accounts.values()].map((a) => ({
    clientId: a.clientId,
    username: a.username,
    source: a.source,
    ...(a.source === 'register' ? { passwordHash: a.passwordHash } : {}),
    positions: [...a.positions],
    version: a.version,
    history: a.history,
  }));
  const snap: EngineSnapshot = {
    v: SNAPSHOT_VERSION,
    journalSeq,
    fillSeq: state.fillSeq,
    requestSeq: state.requestSeq,
    maxClientId: state.maxClientId,
    takenAt: now,
    accounts,
  };
  return encode(snap);
}

export function restoreSnapshot(bytes: Uint8Array): EngineState {
  const snap = decode<EngineSnapshot>(bytes);
  if (snap.v !== SNAPSHOT_VERSION) throw new Error(`snapshot version ${snap.v} is not ${SNAPSHOT_VERSION}`);
  const state = emptyState();
  state.journalSeq = snap.journalSeq;
  state.fillSeq = snap.fillSeq;
  state.requestSeq = snap.requestSeq;
  state.maxClientId = snap.maxClientId;
  for (const img of snap.accounts) {
    const acc: Account = {
      clientId: img.clientId,
      username: img.username,
      passwordHash: img.passwordHash ?? '',
      source: img.source,
      positions: new Map(img.positions),
      version: img.version,
      history: img.history,
      keys: new Map(),
    };
    for (const ev of acc.history) if ('key' in ev && ev.key !== undefined) acc.keys.set(ev.key, ev);
    state.accounts.set(acc.clientId, acc);
    state.byUsername.set(acc.username, acc);
  }
  return state;
}

/** Where snapshots live: a JetStream object store, so the engine keeps no local files. */
export class SnapshotStore {
  private constructor(private readonly store: ObjectStore) {}

  static async open(nc: NatsConnection): Promise<SnapshotStore> {
    return new SnapshotStore(await new Objm(nc).create(SNAPSHOT_BUCKET, { storage: 'file' }));
  }

  async load(): Promise<EngineState | null> {
    const bytes = await this.store.getBlob(SNAPSHOT_OBJECT);
    return bytes ? restoreSnapshot(bytes) : null;
  }

  async save(bytes: Uint8Array): Promise<void> {
    await this.store.putBlob({ name: SNAPSHOT_OBJECT }, bytes);
  }
}
