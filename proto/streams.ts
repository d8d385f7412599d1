import { FILL_STREAM, FILL_SUBJECT_WILDCARD, JOURNAL_STREAM, JOURNAL_SUBJECT, SESSION_SUBJECT } from './subjects.js';

/**
 * JetStream streams the system relies on. Whoever starts first creates them
 * (engine, feed bridge or test); the settings are the contract.
 */
export const NANOS_PER_SECOND = 1_000_000_000;

export const FILL_STREAM_CONFIG = {
  name: FILL_STREAM,
  subjects: [FILL_SUBJECT_WILDCARD, SESSION_SUBJECT],
  storage: 'file' as const,
  // A re-sent fill (same Nats-Msg-Id) inside this window is dropped by the server:
  // a bridge restart or a second bridge never doubles a position.
  duplicate_window: 3600 * NANOS_PER_SECOND,
};

export const JOURNAL_STREAM_CONFIG = {
  name: JOURNAL_STREAM,
  subjects: [JOURNAL_SUBJECT],
  storage: 'file' as const,
  duplicate_window: 120 * NANOS_PER_SECOND,
};

/**
 * Object store of engine snapshots (object `engine-state`, msgpack
 * `EngineSnapshot` of src/engine/snapshot.ts). A snapshot names the journal
 * and fill-stream sequences it is the replay of; start-up = snapshot + the
 * journal after it + the fills after it.
 */
export const SNAPSHOT_BUCKET = 'etf_snapshots';
export const SNAPSHOT_OBJECT = 'engine-state';
