import { at, fields, INT, isMap, isStr, itemsProblem, NUM, oneOf, optional, shape, STR, STR_LIST, type Shape } from './shape.js';
import type { ClearingMessage } from './ndfex.js';
/**
 * The feed bridge's own state in NATS, readable by other processes: the
 * JetStream KV bucket FEED_BUCKET holds the last FeedStatus (key
 * FEED_STATUS_KEY, msgpack, what /health shows) and the bridge's view of the
 * exchange's clearing session (key FEED_CLEARING_KEY), which every bridge
 * instance shares so a restart or a second bridge publishes fills under the
 * same session id, i.e. the same JetStream msg ids (proto/subjects.ts fillMsgId).
 */
export const FEED_BUCKET = 'ndfex_feed';
export const FEED_STATUS_KEY = 'status';
export const FEED_CLEARING_KEY = 'clearing';

export interface ClearingSessionRecord {
  v: 1;
  /** The count of exchange sessions seen; the fill msg id session is `String(session)`. */
  session: number;
  /** The operator's NDFEX_SESSION name when the session began ('' when none was set). */
  name: string;
  /** Highest clearing seq_num seen in this session (saved about every second, so it may lag). */
  last_seq: number;
  /** Wall-clock ms of the last write. */
  ts: number;
  /**
   * Market data's last seq_num and exchange timestamp (ns, decimal) when saved:
   * a later start whose first market data is below either saw the exchange
   * restart while no bridge listened (market data is far busier than clearing,
   * so its seq rarely catches up with the old session's during a downtime).
   */
  md_seq?: number;
  md_ts?: string;
  /**
   * Who sent that market data (address:port). The exchange sends a session
   * from one socket: a later start that hears market data from another, and
   * fills past a gap, cannot tell a restart while no bridge listened (its new
   * session already past the old seqs) from a gap, and asks the operator.
   */
  md_sender?: string;
  /**
   * Who sent the clearing feed (address:port) when saved. A later start takes
   * the first fill from another socket, with market data still from the saved
   * one, as not the exchange's (held for the operator): the exchange sends a
   * session from one socket, and only a new exchange process has another.
   */
  clearing_sender?: string;
}

/** Why a stored clearing session record cannot be used (the bridge stops on one: fill msg ids depend on it). */
export function clearingSessionProblem(r: unknown): string | null {
  if (!isMap(r)) return 'not a map';
  if (!Number.isInteger(r.session) || (r.session as number) < 1) return 'session: not a positive integer';
  if (!Number.isInteger(r.last_seq)) return 'last_seq: not an integer';
  if (!isStr(r.name)) return 'name: not a string';
  if (r.md_sender !== undefined && !isStr(r.md_sender)) return 'md_sender: not a string';
  if (r.clearing_sender !== undefined && !isStr(r.clearing_sender)) return 'clearing_sender: not a string';
  return r.md_seq !== undefined && !Number.isInteger(r.md_seq) ? 'md_seq: not an integer' : null;
}

/** The session string inside fill msg ids. */
export const fillSessionId = (session: number): string => String(session);
/** JetStream msg id of a SessionMarker (proto/fill.ts). */
export const sessionMarkerMsgId = (session: number): string => `session-${session}`;
/** The session a marker's msg id names (sessionMarkerMsgId); null when the id is not a marker's. */
export function sessionOfMarkerMsgId(id: string): number | null {
  const m = /^session-(\d+)$/.exec(id);
  const n = m ? Number(m[1]) : NaN;
  return Number.isSafeInteger(n) && n >= 1 ? n : null;
}

/**
 * Standing feed problems: what may make positions incomplete or wrong (fills
 * missed, an exchange session not believed yet, forged-looking traffic), kept
 * until the operator acknowledges them. The bridge publishes them in every
 * FeedStatus (`problems`, shown on /health and the operator page) and keeps
 * them in FEED_BUCKET under FEED_PROBLEMS_KEY (msgpack FeedProblem[]) so a
 * bridge restart does not forget them.
 */
export const FEED_PROBLEMS_KEY = 'problems';
/**
 * Problems the standby bridge raised (it hears what no bridge heard: a conflict in the run it keeps while no bridge
 * listens), msgpack FeedProblem[], kept in FEED_BUCKET until a bridge takes them into its own (FEED_PROBLEMS_KEY),
 * where the operator sees and acknowledges them; the key is deleted as they are taken.
 */
export const FEED_STANDBY_PROBLEMS_KEY = 'standby_problems';

export interface FeedProblem {
  /** Stable id, the one the operator's decision names. */
  id: string;
  kind:
    | 'gap' // clearing fills missed for good (seq gaps), aggregated
    | 'late_join' // fills of the session sent before the bridge first heard it
    | 'verdict_pending' // a possible new exchange session (or a far seq jump) held: its fills wait
    | 'restart_rejected' // a claimed exchange restart disproved by the old session's own traffic, aggregated
    | 'jump_rejected' // far seq jumps disproved by the followed run going on, aggregated
    | 'conflict' // two different messages with the same seq, aggregated per feed
    | 'held_store' // held fills not kept outside the bridge (a stop now loses them), or a kept run not finished
    | 'progress_unsaved' // the clearing session record not saved for a while (the standby follows it); goes once a save goes through
    | 'marker_unreadable'; // the fill stream's last session marker does not read: which session it opened, and whether the engine reset at it, is in doubt
  feed: 'clearing' | 'market_data';
  detail: string;
  /** How many events this problem stands for (gaps, conflicts, rejected restarts...). */
  count: number;
  /** Wall-clock ms of the first and the latest event. */
  since: number;
  ts: number;
  /** What the operator may do: ack (seen, clear it), confirm / reject (a pending verdict). */
  actions: Array<'ack' | 'confirm' | 'reject'>;
  /** A gap problem: the clearing fills it counts as missed (absent on ones saved before this field: unknown). */
  missed?: number;
}

/**
 * The operator's decisions, sent by the gateway (POST /operator/api/feed/verdict
 * and /feed/ack) as a NATS request on FEED_CONTROL_SUBJECT, msgpack
 * FeedControlRequest, with its reply subject under FEED_CONTROL_REPLY_PREFIX
 * (the only subjects the feed role may answer on); reply msgpack FeedControlReply.
 */
export const FEED_CONTROL_SUBJECT = 'ndfex.feed.control';
export const FEED_CONTROL_REPLY_PREFIX = 'ndfex.feed.control.reply.';

export type FeedControlRequest =
  | { v: 1; op: 'verdict'; id: string; decision: 'confirm' | 'reject'; by: string }
  /** id 'all': every problem whose actions include ack. */
  | { v: 1; op: 'ack'; id: string; by: string };

export type FeedControlReply =
  | { ok: true; done: string[]; problems: FeedProblem[] }
  | { ok: false; code: 'not_found' | 'invalid_parameter'; message: string };

/** Why a stored or published feed problem cannot be shown or acted on. */
export const feedProblemProblem = fields({ id: STR, kind: STR, feed: STR, detail: STR, count: NUM, since: NUM, ts: NUM, actions: STR_LIST });

export const feedControlReplyShape: Shape<FeedControlReply> = shape('feed control reply', (r) => {
  if (!isMap(r)) return 'not a map';
  if (r.ok === false) return !isStr(r.code) ? 'code: not a string' : !isStr(r.message) ? 'message: not a string' : null;
  if (r.ok !== true) return 'ok: not a boolean';
  if (!STR_LIST.ok(r.done)) return `done: ${STR_LIST.what}`;
  return at('problems', itemsProblem(r.problems, feedProblemProblem));
});

/**
 * What the bridge keeps of a held run of clearing messages (proto/subjects.ts
 * heldSubject, stream HELD_STREAM), msgpack, so that a bridge restart before
 * the verdict loses none of them:
 *  - `msgs`: messages of the run as they were held, with the verdict they wait
 *    for (a restarted bridge restores the verdict for the operator), and when
 *    the run's first and last messages were heard (`first_at`, `last_at`,
 *    wall-clock ms): the gap a restored run's next message may believably
 *    skip grows from when it was last heard, not from the restore (absent in
 *    entries of bridges before these fields: the entry's stored time stands in);
 *  - `status`: the verdict was rejected on evidence (still confirmable);
 *  - `applying`: the run is being applied. Written before the session marker
 *    (a restart) and the fills, with the clearing session in force then and
 *    the fill stream's last sequence: a bridge that dies before the run is
 *    purged finishes the application, publishing only the fills the stream
 *    does not hold after that sequence, and begins the session only if no
 *    bridge began it.
 */
export interface HeldVerdict {
  id: string;
  kind: 'restart' | 'jump';
  status: 'pending' | 'rejected';
  /** Opened before the followed run was heard: a restart while no bridge listened. */
  downtime: boolean;
  /** Another sender continuing the session's seq. */
  impostor: boolean;
  opened_at: number;
  /** Why it waited when last written. */
  waiting: string;
  /** Why only the operator may accept it, when so (absent: evidence may, as before the stop). */
  operator_only?: string;
}

export type HeldEntry =
  | { v: 1; kind: 'msgs'; verdict: HeldVerdict; sender: string; msgs: ClearingMessage[]; first_at?: number; last_at?: number }
  | { v: 1; kind: 'status'; verdict: HeldVerdict }
  | { v: 1; kind: 'applying'; session_before: number; restart: boolean; after_stream_seq: number; at: number };

const heldVerdictProblem = fields({ id: STR, kind: oneOf('restart', 'jump'), status: oneOf('pending', 'rejected'), downtime: oneOf(true, false), impostor: oneOf(true, false), opened_at: NUM, waiting: STR, operator_only: optional(STR) });
const heldTimesProblem = fields({ first_at: optional(NUM), last_at: optional(NUM) });
const heldMsgProblem = (m: unknown): string | null => {
  if (!isMap(m)) return 'not a map';
  if (m.type === 'heartbeat') return INT.ok(m.seq) ? null : 'seq: not an integer';
  return m.type === 'fill' ? fields({ seq: INT, client_id: INT, symbol: INT, quantity: INT, price: INT, side: INT })(m) : 'type: not fill or heartbeat';
};

export const heldEntryShape: Shape<HeldEntry> = shape('held clearing entry', (e) => {
  if (!isMap(e)) return 'not a map';
  if (e.v !== 1) return 'v: not 1';
  if (e.kind === 'applying') return fields({ session_before: INT, restart: oneOf(true, false), after_stream_seq: INT, at: optional(NUM) })(e);
  const p = at('verdict', heldVerdictProblem(e.verdict));
  if (p !== null || e.kind === 'status') return p;
  if (e.kind !== 'msgs') return 'kind: not msgs, status or applying';
  if (!isStr(e.sender)) return 'sender: not a string';
  return heldTimesProblem(e) ?? at('msgs', itemsProblem(e.msgs, heldMsgProblem));
});

/**
 * What the standby keeps of the run it hears while suspended on a first seq
 * that skips (src/feed/standby.ts: after a stop of the whole system, the
 * bridge judges that skip), in HELD_STREAM under standbyKeptSubject(session,
 * from), msgpack: a standby restarted before the bridge has gone on past
 * `from` restores the run and still stores it then. Messages of `session`
 * from `sender` (the session's, as the clearing record names it), each seq's
 * first heard, in entries as they were kept; `first_at` and `last_at` as
 * HeldEntry's. Purged once its fills are stored, or once the standby follows
 * another session or sender (the run is not that session's).
 */
export interface StandbyKeptEntry {
  v: 1;
  kind: 'standby_kept';
  session: number;
  sender: string;
  from: number;
  msgs: ClearingMessage[];
  first_at: number;
  last_at: number;
}

export const standbyKeptEntryShape: Shape<StandbyKeptEntry> = shape('standby kept entry', (e) => {
  if (!isMap(e)) return 'not a map';
  if (e.v !== 1) return 'v: not 1';
  if (e.kind !== 'standby_kept') return 'kind: not standby_kept';
  return fields({ session: INT, sender: STR, from: INT, first_at: NUM, last_at: NUM })(e) ?? at('msgs', itemsProblem(e.msgs, heldMsgProblem));
});
