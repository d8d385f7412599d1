import type { KV } from '@nats-io/kv';
import { JetStreamApiCodes } from '@nats-io/jetstream';
import { hasJsApiCode } from '../shared/js-errors.js';
import { isTransientJsError } from '../shared/js-retry.js';
import { decode, encode } from '../../proto/codec.js';
import { FEED_BUCKET, FEED_CLEARING_KEY, clearingSessionProblem, type ClearingSessionRecord } from '../../proto/feed.js';

const MAX_CAS_TRIES = 20;

/**
 * What SessionStore.saveProgress did: saved; nothing to save (`unchanged`, or
 * the record is another session's: `other_session`); or not saved though it
 * should have been: the record is gone (`absent`), or its compare-and-set did
 * not go through (`raced`: another writer, or JetStream without a leader).
 */
export type ProgressSave = 'saved' | 'unchanged' | 'other_session' | 'absent' | 'raced';

/** Where market data stands: its last seq, exchange timestamp and sender (none before it was heard in this process). */
export interface MdProgress {
  seq: number;
  ts: bigint;
  sender?: string;
}

/** Decodes the stored record; anything else there is an operator problem worth stopping for. */
function parseRecord(bytes: Uint8Array): ClearingSessionRecord {
  let r: Partial<ClearingSessionRecord> | undefined;
  try {
    r = decode<Partial<ClearingSessionRecord>>(bytes);
  } catch {
    r = undefined;
  }
  if (!r || clearingSessionProblem(r) !== null) {
    throw new Error(`KV ${FEED_BUCKET}/${FEED_CLEARING_KEY} does not hold a clearing session record: delete the key only if no fill of the current session was published`);
  }
  return r as ClearingSessionRecord;
}

/** Whether opening the record with the operator's session name `name` begins a new session (SessionStore.open's `changed`). */
export async function beginsSession(kv: KV, name: string): Promise<boolean> {
  if (name === '') return false;
  const e = await kv.get(FEED_CLEARING_KEY);
  return !!e && e.operation === 'PUT' && parseRecord(e.value).name !== name;
}

/**
 * The exchange session as every bridge instance sees it, in the KV bucket
 * FEED_BUCKET (key FEED_CLEARING_KEY). Changes go through compare-and-set on
 * the entry's revision, so two bridges that see the same restart agree on one
 * new session number instead of each counting it.
 */
export class SessionStore {
  private constructor(
    private readonly kv: KV,
    /** The operator's NDFEX_SESSION ('' = none). */
    private readonly name: string,
    public record: ClearingSessionRecord,
  ) {}

  /**
   * Loads the record, creating session 1 when there is none. `changed` is set
   * when the operator's session name differs from the stored one: a new
   * session begins (or was already begun by another bridge with that name).
   */
  static async open(kv: KV, name: string, now = Date.now()): Promise<{ store: SessionStore; changed: boolean }> {
    for (let i = 0; i < MAX_CAS_TRIES; i++) {
      const e = await kv.get(FEED_CLEARING_KEY);
      if (!e || e.operation !== 'PUT') {
        const record: ClearingSessionRecord = { v: 1, session: 1, name, last_seq: 0, ts: now };
        const ok = e ? await cas(kv, record, e.revision) : await createRecord(kv, record);
        if (ok) return { store: new SessionStore(kv, name, record), changed: false };
        continue;
      }
      const cur = parseRecord(e.value);
      if (name === '' || cur.name === name) return { store: new SessionStore(kv, name, cur), changed: false };
      const next: ClearingSessionRecord = { v: 1, session: cur.session + 1, name, last_seq: 0, ts: now };
      if (await cas(kv, next, e.revision)) return { store: new SessionStore(kv, name, next), changed: true };
    }
    throw new Error(`could not open the clearing session record: ${MAX_CAS_TRIES} concurrent updates`);
  }

  get session(): number {
    return this.record.session;
  }

  /**
   * Starts the session after `from` (the exchange restarted at `seq`). When
   * another bridge already did, adopts its number. Returns the session to use.
   */
  async beginAfter(from: number, seq: number, now = Date.now()): Promise<number> {
    for (let i = 0; i < MAX_CAS_TRIES; i++) {
      const e = await this.kv.get(FEED_CLEARING_KEY);
      const cur = e && e.operation === 'PUT' ? parseRecord(e.value) : null;
      if (cur && cur.session > from) {
        this.record = cur;
        return cur.session;
      }
      const next: ClearingSessionRecord = { v: 1, session: from + 1, name: this.name || (cur?.name ?? ''), last_seq: seq, ts: now };
      const ok = e ? await cas(this.kv, next, e.revision) : await createRecord(this.kv, next);
      if (ok) {
        this.record = next;
        return next.session;
      }
    }
    throw new Error(`could not begin session ${from + 1}: ${MAX_CAS_TRIES} concurrent updates`);
  }

  /**
   * Records how far this session got on the clearing feed (unless the stored
   * record moved on: a newer session, a later seq) and where market data stood,
   * the evidence a later start compares with to see an exchange restart that
   * happened while no bridge was listening.
   */
  async saveProgress(lastSeq: number, md?: MdProgress, clearingSender: string | null = null, now = Date.now()): Promise<ProgressSave> {
    const e = await this.kv.get(FEED_CLEARING_KEY);
    if (!e || e.operation !== 'PUT') return 'absent';
    const cur = parseRecord(e.value);
    const clearingMoved = cur.last_seq < lastSeq || (clearingSender !== null && clearingSender !== cur.clearing_sender);
    const mdMoved = md !== undefined && md.seq > 0 && (md.seq !== cur.md_seq || (md.sender !== undefined && md.sender !== cur.md_sender));
    if (cur.session !== this.record.session) return 'other_session';
    if (!clearingMoved && !mdMoved) return 'unchanged';
    const mdNow = mdMoved ? { md_seq: md.seq, md_ts: String(md.ts), ...(md.sender !== undefined ? { md_sender: md.sender } : {}) } : {};
    const senderNow = clearingSender !== null ? { clearing_sender: clearingSender } : {};
    const next: ClearingSessionRecord = { ...cur, last_seq: Math.max(cur.last_seq, lastSeq), ts: now, ...mdNow, ...senderNow };
    if (!(await cas(this.kv, next, e.revision))) return 'raced';
    this.record = next;
    return 'saved';
  }
}

async function cas(kv: KV, record: ClearingSessionRecord, revision: number): Promise<boolean> {
  try {
    await kv.update(FEED_CLEARING_KEY, encode(record), revision);
    return true;
  } catch (err) {
    if (lostRace(err)) return false;
    throw err;
  }
}

async function createRecord(kv: KV, record: ClearingSessionRecord): Promise<boolean> {
  try {
    await kv.create(FEED_CLEARING_KEY, encode(record));
    return true;
  } catch (err) {
    if (lostRace(err)) return false;
    throw err;
  }
}

/** Another writer moved the record first (wrong last sequence), or JetStream is between leaders: the caller reads it again and retries; anything else is thrown. */
export const lostRace = (err: unknown): boolean =>
  hasJsApiCode(err, JetStreamApiCodes.StreamWrongLastSequence) || hasJsApiCode(err, JetStreamApiCodes.StreamWrongLastSequenceUnknown) || isTransientJsError(err);
