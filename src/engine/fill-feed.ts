import type { NatsConnection } from '@nats-io/transport-node';
import type { JsMsg } from '@nats-io/jetstream';
import { decode } from '../../proto/codec.js';
import { fillDelta, fillProblem, type Fill, type SessionMarker } from '../../proto/fill.js';
import type { Delta } from '../../proto/journal.js';
import { FILL_STREAM, SESSION_SUBJECT, fillSessionOfMsgId } from '../../proto/subjects.js';
import { readStream, type StreamFollower } from '../shared/stream-reader.js';
import type { Logger } from '../shared/log.js';
import { applyFill, applySessionReset } from './core.js';
import type { Account, EngineState } from './state.js';

export interface FillFeedStats {
  applied: number;
  /** Fills for client_ids no account has: counted, and kept aside for a later roster account up to MAX_UNCLAIMED ids (EngineState.unclaimed). */
  unknownAccount: number;
  invalid: number;
  sessionResets: number;
  /** Fills stored under an earlier exchange session's msg id after a later session's marker: not applied. */
  stale: number;
  /** Fills of an exchange session and seq already applied, stored again (after JetStream's duplicate window): not applied. */
  duplicates: number;
}

export type FillChange =
  | { cause: 'fill'; acc: Account; deltas: Delta[]; fill: Fill }
  | { cause: 'session_reset'; acc: Account; deltas: Delta[] };

/** Unknown client_ids already reported, bounded so a stream of garbage ids cannot grow memory. */
const reportedUnknown = new Set<number>();
const MAX_REPORTED_UNKNOWN = 100;

const ALL = () => true;
/** The session whose stale fills were last logged (the first of each is). */
let lastStaleLogged = -1;

export const emptyFillStats = (): FillFeedStats => ({ applied: 0, unknownAccount: 0, invalid: 0, sessionResets: 0, stale: 0, duplicates: 0 });

/**
 * Applies one message of the fill stream: a fill, or an exchange session
 * marker. Shared by the live feed and by the consistency check's rebuild, so
 * both read the stream the same way.
 */
export function applyFillMessage(state: EngineState, m: JsMsg, stats: FillFeedStats, log: Logger, owns: (clientId: number) => boolean = ALL): FillChange[] {
  if (m.seq <= state.fillSeq) return [];
  let payload: unknown;
  try {
    payload = decode(m.data);
  } catch {
    payload = undefined;
  }
  if (m.subject === SESSION_SUBJECT) {
    const marker = payload as SessionMarker;
    if (Number.isSafeInteger(marker?.session) && marker.session > state.exchangeSession) {
      state.exchangeSession = marker.session;
      state.fillsSeen.forgetBefore(marker.session);
    }
    if (marker?.reset === true) {
      const changed = applySessionReset(state, m.seq);
      state.lastReset = { ts: Number(m.timestampNanos / 1_000_000n), requestSeq: state.requestSeq };
      stats.sessionResets++;
      log.warn({ streamSeq: m.seq, accounts: changed.length, detail: marker.detail }, 'exchange restart: positions reset to 0');
      return changed.map((c) => ({ cause: 'session_reset' as const, ...c }));
    }
    state.fillSeq = m.seq;
    log.warn({ streamSeq: m.seq, detail: marker?.detail }, 'exchange restart: positions kept');
    return [];
  }
  const problem = fillProblem(payload);
  if (problem) {
    state.fillSeq = m.seq;
    stats.invalid++;
    log.warn({ streamSeq: m.seq, subject: m.subject, problem }, 'invalid fill skipped');
    return [];
  }
  const fill = payload as Fill;
  const msgId = m.headers?.get('Nats-Msg-Id') ?? '';
  const session = fillSessionOfMsgId(msgId);
  if (session !== null && session < state.exchangeSession) {
    // Stored after the marker of a later session by a bridge still following the old one: the new session's copy counts.
    state.fillSeq = m.seq;
    // The first of each session once: a bridge a status interval behind stores a run of them.
    stats.stale++;
    if (state.exchangeSession !== lastStaleLogged) {
      lastStaleLogged = state.exchangeSession;
      log.warn({ streamSeq: m.seq, session, current: state.exchangeSession }, 'fills of an earlier exchange session stored after a later one began are not applied (counted as stale)');
    }
    return [];
  }
  // A bridge's fill (its msg id names the session and this seq): a second one of that session and seq is a copy stored
  // after JetStream's duplicate window. Fills without such an id (tools, tests) are not the bridges' and are not kept.
  if (session !== null && msgId.endsWith(`-${fill.seq}`)) {
    if (state.fillsSeen.has(session, fill.seq)) {
      state.fillSeq = m.seq;
      stats.duplicates++;
      if (stats.duplicates === 1 || stats.duplicates % 1000 === 0) {
        log.warn({ streamSeq: m.seq, session, seq: fill.seq, duplicates: stats.duplicates }, 'a fill of an exchange session and seq already applied, stored again: not applied (counted as duplicate)');
      }
      return [];
    }
    state.fillsSeen.add(session, fill.seq);
  }
  if (!owns(fill.client_id)) {
    // Another engine shard's account (proto/shards.ts): every shard reads every fill and takes its own.
    state.fillSeq = m.seq;
    return [];
  }
  const acc = applyFill(state, fill, m.seq);
  if (!acc) {
    stats.unknownAccount++;
    // Once per id: the exchange clears every participant (market makers too), so these are routine, not a fault to repeat.
    if (!reportedUnknown.has(fill.client_id) && reportedUnknown.size < MAX_REPORTED_UNKNOWN) {
      reportedUnknown.add(fill.client_id);
      if (state.unclaimed.has(fill.client_id)) {
        log.info({ clientId: fill.client_id }, 'fills for a client_id without an account are kept aside: a roster line naming this client_id, added later, starts from them');
      } else {
        log.warn({ clientId: fill.client_id, kept: state.unclaimed.size }, 'fills for a client_id without an account are counted and not kept: too many client_ids are kept aside already');
      }
    }
    return [];
  }
  stats.applied++;
  return [{ cause: 'fill', acc, deltas: [[fill.symbol, fillDelta(fill)]], fill }];
}

/**
 * Follows the fill stream from the sequence after the last one the state has
 * applied. Every fill is applied exactly once because the position lives in
 * the state itself (state.fillSeq), not in a consumer's acks.
 */
export async function followFills(
  nc: NatsConnection,
  state: EngineState,
  log: Logger,
  onChange: (change: FillChange) => void,
  owns: ((clientId: number) => boolean) | undefined,
  /** The follower stopped after catch-up (a handler threw): the positions no longer move, so the owner must stop. */
  onError: (err: unknown) => void,
  stats: FillFeedStats = emptyFillStats(),
): Promise<{ follower: StreamFollower; stats: FillFeedStats }> {
  const follower = await readStream(
    nc,
    FILL_STREAM,
    state.fillSeq + 1,
    (m) => {
      for (const c of applyFillMessage(state, m, stats, log, owns)) onChange(c);
    },
    { follow: true, onError, log },
  );
  return { follower, stats };
}
