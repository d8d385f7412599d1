/**
 * Every NATS subject and JetStream stream the system uses. Nothing else in the
 * tree spells a subject: import it from here.
 */

/** Exchange fills, one subject per exchange client_id: `ndfex.fill.<client_id>`. */
export const FILL_SUBJECT_PREFIX = 'ndfex.fill';
export const fillSubject = (clientId: number): string => `${FILL_SUBJECT_PREFIX}.${clientId}`;
export const FILL_SUBJECT_WILDCARD = `${FILL_SUBJECT_PREFIX}.*`;
/** Exchange session markers (proto/fill.ts SessionMarker), in the fill stream. */
export const SESSION_SUBJECT = 'ndfex.session';
/**
 * JetStream message id of a fill, for de-duplication: the exchange session
 * and the clearing seq_num identify a fill uniquely, so the same fill
 * published twice (bridge restart, two bridges) is stored once.
 */
export const fillMsgId = (session: string, seq: number): string => `fill-${session}-${seq}`;
/** The exchange session (the bridges' count, proto/feed.ts fillSessionId) a fill msg id names; null when the id is not a fill's. */
export function fillSessionOfMsgId(id: string): number | null {
  const m = /^fill-(\d+)-\d+$/.exec(id);
  return m ? Number(m[1]) : null;
}
/** The clearing seq a fill msg id of `session` names; null when the id is not one of that session's fills. */
export function fillSeqOfMsgId(session: string, id: string): number | null {
  const prefix = `fill-${session}-`;
  if (!id.startsWith(prefix)) return null;
  const seq = Number(id.slice(prefix.length));
  return Number.isSafeInteger(seq) ? seq : null;
}

/** Requests to the engine actor (a CommandBatch, replied to with a ReplyBatch). */
export const ENGINE_COMMAND_SUBJECT = 'etf.engine.cmd';
/**
 * Operators' reads of the engine (dump, ping), apart from the gateway's command
 * subject so that NATS permissions can let the operator's tools read state
 * without letting them act for a team or read credentials.
 */
export const ENGINE_ADMIN_SUBJECT = 'etf.engine.admin';
/** What the engine answers on ENGINE_ADMIN_SUBJECT; anything else there is refused. */
export const ENGINE_ADMIN_OPS: ReadonlySet<string> = new Set(['dump', 'ping']);
/**
 * Engine shards asking one another to reserve a roster username (the `claim`
 * command, nothing else), `etf.engine.names.<shard>` (ShardNames.names):
 * apart from the command subject so that only engines, not gateways, can
 * reserve a name. Answered on the asking engine's own inbox.
 */
export const ENGINE_NAMES_SUBJECT_PREFIX = 'etf.engine.names';
/** What the engine answers on its names subject; anything else there is refused, and a `claim` anywhere else. */
export const ENGINE_NAMES_OPS: ReadonlySet<string> = new Set(['claim']);
/** Queue group of the engine: if a second engine is started by mistake, NATS still delivers each batch once. */
export const ENGINE_QUEUE = 'etf-engine';

/** The engine's journal: one JournalBatch per group commit (or several, under a small max_payload: src/engine/journal.ts). */
export const JOURNAL_SUBJECT = 'etf.journal';

/**
 * Holdings changes and request outcomes, published by each engine shard once
 * they are durable: one NoticeBatch (proto/holdings.ts) per group commit on
 * `etf.notices.<shard>` (ShardNames.notices).
 */
export const NOTICES_SUBJECT_PREFIX = 'etf.notices';
export const NOTICES_SUBJECT_WILDCARD = 'etf.notices.>';

/**
 * Accounts whose sign-in changed outside the journal (the roster file read
 * again: a password changed, a line taken out or put back), published by each
 * engine shard on `etf.signin.<shard>` (ShardNames.signin, proto/engine.ts
 * SignInChanges): a gateway checks those accounts' passwords with the engine
 * at their next request instead of trusting its cache for up to
 * credentialsCacheMs. Usernames only: never a hash.
 */
export const SIGNIN_SUBJECT_PREFIX = 'etf.signin';
export const SIGNIN_SUBJECT_WILDCARD = `${SIGNIN_SUBJECT_PREFIX}.*`;

/**
 * An engine shard serving, published once at each start after its start-up
 * replay (proto/engine.ts EngineStarted), on `etf.started.<shard>`
 * (ShardNames.started). Changes the shard applied while starting (fills stored
 * while it was down, notices of a group it died before settling) were never
 * published: a gateway hearing this takes a fresh snapshot of every account of
 * that shard it streams (src/gateway/ws/hub.ts).
 */
export const ENGINE_STARTED_SUBJECT_PREFIX = 'etf.started';
export const ENGINE_STARTED_SUBJECT_WILDCARD = `${ENGINE_STARTED_SUBJECT_PREFIX}.*`;

/**
 * An engine shard about to exit on a fault (proto/engine.ts EngineFault), on
 * `etf.faults.engine.<shard>`: best effort, so /health can say why the engine
 * is unavailable while the supervisor restarts it.
 */
export const ENGINE_FAULT_SUBJECT_PREFIX = 'etf.faults.engine';
export const engineFaultSubject = (shard: number): string => `${ENGINE_FAULT_SUBJECT_PREFIX}.${shard}`;
export const ENGINE_FAULT_SUBJECT_WILDCARD = `${ENGINE_FAULT_SUBJECT_PREFIX}.*`;

/** Where a gateway instance receives its replies: `etf.reply.<gateway id>.<batch number>` (the batch named, so an unreadable answer still fails the right requests). */
export const replySubject = (gatewayId: string): string => `etf.reply.${gatewayId}`;
export const REPLY_SUBJECT_PREFIX = 'etf.reply.';
export const REPLY_SUBJECT_WILDCARD = 'etf.reply.>';
/** Where answers to ENGINE_ADMIN_SUBJECT go: `etf.admin.reply.<id>`, apart from the gateway's (credentials travel there). */
export const ADMIN_REPLY_SUBJECT_PREFIX = 'etf.admin.reply.';
export const adminReplySubject = (id: string): string => `${ADMIN_REPLY_SUBJECT_PREFIX}${id}`;

/** JetStream streams. */
export const FILL_STREAM = 'NDFEX_FILLS';
/**
 * The clearing messages a pending exchange-session verdict holds (never
 * applied yet), kept by the feed bridge so that a bridge restart does not lose
 * them: one subject per held run, `ndfex.held.<verdict id>.<first seq>`
 * (proto/feed.ts HeldEntry), purged once the run is applied or dropped. The
 * standby's kept run (heard while no bridge listened, stored once the bridge
 * goes on past it) is kept there too, so that a standby restart does not lose
 * it: `ndfex.held.standby.<session>.<first seq>` (proto/feed.ts
 * StandbyKeptEntry; a verdict's id never reads `standby`), which a bridge
 * leaves alone.
 */
export const HELD_STREAM = 'NDFEX_HELD';
export const HELD_SUBJECT_PREFIX = 'ndfex.held';
export const HELD_SUBJECT_WILDCARD = `${HELD_SUBJECT_PREFIX}.>`;
export const heldSubject = (verdict: string, from: number): string => `${HELD_SUBJECT_PREFIX}.${verdict}.${from}`;
const STANDBY_KEPT_PREFIX = `${HELD_SUBJECT_PREFIX}.standby.`;
export const standbyKeptSubject = (session: number, from: number): string => `${STANDBY_KEPT_PREFIX}${session}.${from}`;
export const isStandbyKeptSubject = (subject: string): boolean => subject.startsWith(STANDBY_KEPT_PREFIX);
export const JOURNAL_STREAM = 'ETF_JOURNAL';

/**
 * The class's desk (proto/desk.ts): chart samples and conversion scorecards,
 * written by the pricing service alone into DESK_STREAM, read by every
 * gateway at start and live, and by the audit export. A sample on
 * `etf.desk.sample.<ms>` (the ms make it the only message of its subject), a
 * scorecard on `etf.desk.card.<client_id>.<request_id>` (request ids are per
 * engine shard; a client_id lives on one shard), rewritten as its legs are sold.
 */
export const DESK_STREAM = 'ETF_DESK';
export const DESK_SUBJECT_WILDCARD = 'etf.desk.>';
export const DESK_SAMPLE_PREFIX = 'etf.desk.sample.';
export const DESK_CARD_PREFIX = 'etf.desk.card.';
export const deskSampleSubject = (ts: number): string => `${DESK_SAMPLE_PREFIX}${ts}`;
export const deskCardSubject = (clientId: number, requestId: string): string => `${DESK_CARD_PREFIX}${clientId}.${requestId}`;
/**
 * The desk writer's own place in the engine's streams, so that a restarted
 * writer takes up what it did not hear (proto/desk.ts DeskCursor, DeskLegs):
 * one cursor, and per team its conversions whose legs are not all sold yet.
 * Readers of the desk's history skip both.
 */
export const DESK_CURSOR_SUBJECT = 'etf.desk.cursor';
export const DESK_LEGS_PREFIX = 'etf.desk.legs.';
export const deskLegsSubject = (clientId: number): string => `${DESK_LEGS_PREFIX}${clientId}`;
