import { fields, INT, shape, STR, type Shape } from './shape.js';
import { DESK_STREAM, DESK_SUBJECT_WILDCARD, FILL_STREAM, FILL_SUBJECT_WILDCARD, HELD_STREAM, HELD_SUBJECT_WILDCARD, JOURNAL_STREAM, JOURNAL_SUBJECT, SESSION_SUBJECT } from './subjects.js';

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

/** Held clearing messages (proto/feed.ts HeldEntry): small, rare, and purged per run once it is decided. */
export const HELD_STREAM_CONFIG = {
  name: HELD_STREAM,
  subjects: [HELD_SUBJECT_WILDCARD],
  storage: 'file' as const,
  duplicate_window: 3600 * NANOS_PER_SECOND,
};

export const JOURNAL_STREAM_CONFIG = {
  name: JOURNAL_STREAM,
  subjects: [JOURNAL_SUBJECT],
  storage: 'file' as const,
  duplicate_window: 120 * NANOS_PER_SECOND,
};

/**
 * Engine snapshots (the format in src/engine/snapshot.ts, the store in
 * src/engine/snapshot-store.ts): a snapshot's bytes (msgpack) are cut into
 * chunks on SNAPSHOT_CHUNK_SUBJECT, then a manifest
 * on SNAPSHOT_MANIFEST_SUBJECT naming the chunks' stream sequences, size and
 * sha256. The last manifest is the snapshot in force; chunks older than it
 * are purged. A snapshot names the journal and fill-stream sequences it is
 * the replay of: start-up = snapshot + the journal after it + the fills after it.
 */
export const SNAPSHOT_STREAM = 'ETF_SNAPSHOTS';
export const SNAPSHOT_CHUNK_SUBJECT = 'etf.snapshot.chunk';
export const SNAPSHOT_MANIFEST_SUBJECT = 'etf.snapshot.manifest';
export const SNAPSHOT_CHUNK_BYTES = 512 * 1024;

export interface SnapshotManifest {
  v: 1;
  firstSeq: number;
  lastSeq: number;
  bytes: number;
  sha256: string;
  journalSeq: number;
  takenAt: number;
}

export const snapshotManifestShape: Shape<SnapshotManifest> = shape(
  'snapshot manifest',
  fields({ firstSeq: INT, lastSeq: INT, bytes: INT, sha256: STR, journalSeq: INT, takenAt: INT }),
);

export const SNAPSHOT_STREAM_CONFIG = {
  name: SNAPSHOT_STREAM,
  subjects: [SNAPSHOT_CHUNK_SUBJECT, SNAPSHOT_MANIFEST_SUBJECT],
  storage: 'file' as const,
};

/**
 * The desk's chart samples and scorecards (proto/desk.ts). One message per
 * subject: a scorecard rewritten as its legs are sold keeps only its newest.
 * Bounded for a class session and the grading after it: samples are written
 * at the chart grid's pace (its step doubles as the session grows, so a day
 * is a few thousand samples), and whatever is older than a week or beyond the
 * byte limit goes first.
 */
export const DESK_STREAM_CONFIG = {
  name: DESK_STREAM,
  subjects: [DESK_SUBJECT_WILDCARD],
  storage: 'file' as const,
  max_msgs_per_subject: 1,
  max_age: 7 * 24 * 3600 * NANOS_PER_SECOND,
  max_bytes: 256 * 1024 * 1024,
  discard: 'old' as const,
};
