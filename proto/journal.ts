import type { ConversionRules } from './rules.js';
import type { ConversionOp, EngineRefusal } from './engine.js';

/**
 * The engine's journal (stream ETF_JOURNAL, subject JOURNAL_SUBJECT): every
 * decision the engine made, one JournalBatch per group commit (several, each a
 * run of its events, when one would be over the server's max_payload). Replay applies
 * events without re-deciding them, so the journal alone (plus the fill
 * stream) rebuilds the state, and it doubles as the audit trail.
 */
export const JOURNAL_VERSION = 3;
/**
 * A batch with an account that claims fills heard before it (`claimed`): an
 * engine that does not know the field would replay the account without them,
 * so such a batch is written as this version, which those engines refuse.
 */
export const JOURNAL_VERSION_CLAIMS = 4;
/**
 * A batch with a `name` event: an engine that does not know it would replay
 * without the reservation and let /register take a name another shard's
 * roster account holds, so such a batch is written as this version, which
 * those engines refuse.
 */
export const JOURNAL_VERSION_NAMES = 5;
/**
 * Batches of these versions replay (1: conversions spell out deltas and positions after as pairs;
 * 2: compact conversions, no fill positions; 3: version 2 with `fills`; 4: version 3 with `claimed`;
 * 5: version 4 with `name`).
 */
export const JOURNAL_VERSIONS_READ: readonly number[] = [1, 2, 3, 4, 5];

/** [symbol id, signed quantity] */
export type Delta = [number, number];

/** Exchange fills heard for a client_id before any account had it: their net positions and cash, and how many. */
export interface ClaimedFills {
  positions: Delta[];
  cash: number;
  fills: number;
}

export type JournalEvent =
  /** An account the engine now knows. Roster accounts carry no hash: their password comes from the roster at each start. */
  | {
      t: 'account';
      clientId: number;
      username: string;
      source: 'register' | 'roster';
      /** Sealed (proto/engine.ts SEALED_HASH_PREFIX); a plain bcrypt hash in journals written before sealing. */
      passwordHash?: string;
      /** Opening holdings from an ETF-format roster line, applied once. */
      opening?: Delta[];
      /**
       * A roster account that names its client_id, added after the exchange
       * had filled that id in this session: the fills the engine heard for it
       * meanwhile (EngineState.unclaimed), credited as it opens. The amounts
       * are recorded, so replay credits exactly what the answers then saw.
       */
      claimed?: ClaimedFills;
      /** Engine request id of a /register. */
      requestId?: number;
      ts: number;
    }
  | {
      t: 'conversion';
      requestId: number;
      /** The caller's idempotency key. */
      key?: string;
      op: ConversionOp;
      clientId: number;
      etf: string;
      amount: number;
      /**
       * Version-1 records only. Version 2 leaves the deltas out: they follow
       * from (etf, basketVersion, op, amount), since basket versions never
       * change once journaled (version 0: the last config_baskets before it).
       */
      deltas?: Delta[];
      /** Version-1 records only: the positions right after, as pairs. */
      after?: Delta[];
      /**
       * Version 2: the positions right after, flat [symbol, quantity, ...],
       * for the audit trail (/requests, /history, the export). Replay order of
       * fills differs, so they cannot be recomputed; the engine's edge (the
       * actor) writes them as it journals, the core never builds them.
       * Absent from an event that has not been journaled yet.
       */
      held?: number[];
      /** Fee charged in cash (price units); absent: none (journals from before fees). */
      fee?: number;
      /** The basket version it used (absent: 0, the config's). */
      basketVersion?: number;
      ts: number;
    }
  /**
   * The baskets file's baskets (version 0 of each ETF) for requests after
   * this point: journaled at start when they differ from the last journaled,
   * so compact conversions replay with the basket they used even if the file
   * is edited between runs.
   */
  | { t: 'config_baskets'; baskets: { etf: string; symbol: number; components: Delta[] }[]; ts: number }
  /**
   * A username reserved for another engine shard's roster account (client_id
   * `clientId`, which lives there): journaled by the shard the name hashes to
   * (proto/shards.ts shardOfUsername), which decides every /register of it,
   * before the other shard opens the account. From then on /register refuses
   * the name here, as it refuses a name one of this shard's accounts has.
   */
  | { t: 'name'; username: string; clientId: number; ts: number }
  /** The operator gave an ETF a new basket (version 1, 2, ...; version 0 is the config's), used by conversions from `from` (ms) on. */
  | { t: 'basket'; etf: string; version: number; components: Delta[]; from: number; by: string; ts: number }
  /** The operator replaced the conversion rules (proto/rules.ts): who, when. */
  | { t: 'rules'; rules: ConversionRules; by: string; ts: number }
  /** The operator halted or resumed conversions (of one ETF, or of all when etf is null): who, when, why. */
  | {
      t: 'operator';
      action: 'halt' | 'resume';
      etf: string | null;
      reason?: string;
      by: string;
      ts: number;
    }
  /** A refused create, redeem or registration: changes no position, kept for the audit trail and idempotent retries. */
  | {
      t: 'rejected';
      requestId: number;
      key?: string;
      kind: 'register' | ConversionOp;
      clientId: number | null;
      username?: string;
      etf?: string | null;
      amount?: number;
      /** In codes (proto/engine.ts Rejection) since engine protocol 3, within journal version 3; with its words (RecordedRejection) before. Replay reads both. */
      error: EngineRefusal;
      /** Positions at the time, for the audit trail. */
      holdings?: Delta[];
      ts: number;
    };

export interface JournalBatch {
  v: number;
  events: JournalEvent[];
  /**
   * Version 3: where in the fill stream the engine stood as it applied these
   * events, flat [event index, fill-stream sequence, ...]: the sequence holds
   * for that event and the ones after it up to the next pair (the first pair
   * names index 0). Fills commute with conversions, but an exchange session
   * reset (it zeroes) and a fill for a client_id not registered yet (ignored)
   * do not: replay applies the fill stream up to an event's sequence before
   * the event (src/engine/replay.ts), so it rebuilds exactly the books the
   * engine answered from. Absent (versions 1, 2): replayed as they always were,
   * every journal event before the fills after the snapshot.
   */
  fills?: number[];
}
