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
}

/** The session string inside fill msg ids. */
export const fillSessionId = (session: number): string => String(session);
/** JetStream msg id of a SessionMarker (proto/fill.ts). */
export const sessionMarkerMsgId = (session: number): string => `session-${session}`;
