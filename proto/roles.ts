/**
 * Who may do what on the NATS bus. The launcher's nats-server gives each role
 * its own user with exactly these permissions (src/launcher/nats-auth.ts), so
 * another user of the host who reaches the port can do nothing, and a leaked
 * service password is limited to that service's job. test/nats-auth.test.ts
 * proves each line below on a nats-server configured as the launcher does.
 *
 *   engine   CAN   take commands (its command and admin subjects), answer on reply
 *                  subjects only, write and read its journal and snapshots (and purge
 *                  old snapshots), read fills, publish notices, sign-in changes and
 *                  that it started, read and write baskets; as one shard of several,
 *                  ask the shard a roster username hashes to to reserve it (the names
 *                  subjects, answered on the engines' own inbox) and hear shards start.
 *            CANNOT publish fills or session markers, send commands, listen to
 *                  replies, write prices, books or feed state, administer streams.
 *            (The names subjects are the engines' alone: a gateway cannot reserve a name.)
 *   gateway  CAN   send commands (and so read credentials: it checks passwords), hear
 *                  replies, notices, sign-in changes, engine starts, prices, feed and pricing status and alerts, read prices, books, baskets
 *                  and the desk (chart samples and scorecards).
 *            CANNOT write or read the journal or snapshots, publish fills, write any
 *                  bucket, administer streams, listen to another role's inbox.
 *   feed     CAN   publish fills, session markers, books, feed status and alerts; write
 *                  its feed and book buckets and its held messages; read the fill stream.
 *            CANNOT send commands, listen to replies or notices, read the journal,
 *                  write prices or baskets, administer streams.
 *   pricing  CAN   hear books, write prices (subjects and bucket) and its status, read books and baskets;
 *                  as the desk's writer, hear prices and notices, write and read the desk
 *                  stream, read the engine through the operators' read-only subject (dump),
 *                  and read the journal and the fill stream (the conversions and sells it
 *                  did not hear as notices: notices are not kept; the journal's password
 *                  hashes are sealed, as they are for the operator).
 *            CANNOT publish fills, send commands, listen to anything else, write the
 *                  journal, books, feed state or baskets, administer streams.
 *   operator CAN   administer streams (the launcher creates them with it), read every
 *                  stream (journal, snapshots, fills, buckets) for `npm run check` and
 *                  `npm run export-audit`, send admin commands (reads, halts, rules, baskets).
 *            CANNOT act for a team or read credentials (commands and their replies),
 *                  fake the exchange (fills, session markers) or any service's output
 *                  (journal, notices, prices, buckets).
 *
 * Credentials: the operator reads the journal and the snapshots, and could
 * even make a stream capturing commands and replies (stream administration
 * is not limited by subject), so permissions alone cannot keep a password
 * hash from it. Hashes are therefore sealed wherever they leave the gateway's
 * or the engine's memory (proto/engine.ts SEALED_HASH_PREFIX) under a key only
 * those two processes read from a file (src/shared/credentials-key.ts): the
 * operator, or anyone with a copy of a stream, sees ciphertext. A separate
 * credentials stream would have left the capture open and needed journal and
 * snapshot changes; sealing keeps every journal replaying (a clear hash from
 * an older journal is sealed by the engine at start, though that old record
 * itself stays as it was written).
 * (The simulator stands in for the exchange on multicast only: it has no NATS user.)
 */
import { BASKET_BUCKET, BBO_BUCKET, BBO_SUBJECT_WILDCARD, FEED_ALERT_SUBJECT, FEED_STATUS_SUBJECT, PRICE_BUCKET, PRICE_SUBJECT_WILDCARD, PRICING_STATUS_SUBJECT } from './marketdata.js';
import { FEED_BUCKET, FEED_CONTROL_REPLY_PREFIX, FEED_CONTROL_SUBJECT } from './feed.js';
import { shardNames } from './shards.js';
import {
  FILL_STREAM,
  HELD_STREAM,
  HELD_SUBJECT_WILDCARD,
  FILL_SUBJECT_WILDCARD,
  NOTICES_SUBJECT_WILDCARD,
  SIGNIN_SUBJECT_WILDCARD,
  ENGINE_STARTED_SUBJECT_WILDCARD,
  ADMIN_REPLY_SUBJECT_PREFIX,
  ENGINE_FAULT_SUBJECT_WILDCARD,
  REPLY_SUBJECT_WILDCARD,
  SESSION_SUBJECT,
  DESK_STREAM,
  DESK_SUBJECT_WILDCARD,
} from './subjects.js';

export const ROLES = ['engine', 'gateway', 'feed', 'pricing', 'operator'] as const;
export type Role = (typeof ROLES)[number];

export interface Permissions {
  publish: { allow: string[] };
  subscribe: { allow: string[] };
}

/** Each role's private inbox prefix: replies to one role cannot be read by another. */
export const inboxPrefix = (role: Role): string => `_INBOX_${role}`;

const KV_STREAM = (bucket: string) => `KV_${bucket}`;

/** Reading a stream: its info, single messages, and ordered (ephemeral) consumers. */
function readStream(stream: string): string[] {
  return [
    `$JS.API.STREAM.INFO.${stream}`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}.>`,
    `$JS.API.CONSUMER.CREATE.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}.>`,
    `$JS.API.CONSUMER.INFO.${stream}.>`,
    `$JS.API.CONSUMER.DELETE.${stream}.>`,
    `$JS.API.CONSUMER.MSG.NEXT.${stream}.>`,
  ];
}
const readKv = (bucket: string) => readStream(KV_STREAM(bucket));
const writeKv = (bucket: string) => [`$KV.${bucket}.>`];
/** Every JetStream client asks for the account's JetStream info first. */
const JS_BASE = ['$JS.API.INFO'];

/**
 * The permissions of each role for a system of `shards` engine shards
 * (proto/shards.ts): every shard's own subjects and streams are listed by
 * name, so no wildcard lets a role reach a stream it has no business with.
 * Engine shards share the engine's user.
 */
export function rolePermissions(shards = 1): Record<Role, Permissions> {
  const all = Array.from({ length: shards }, (_, k) => shardNames(k, shards));
  return {
    engine: {
      publish: {
        allow: [
          ...JS_BASE,
          ...all.flatMap((n) => [
            n.journalSubject,
            n.snapshotChunk,
            n.snapshotManifest,
            // Old snapshots are its own to drop; no other stream administration.
            `$JS.API.STREAM.PURGE.${n.snapshotStream}`,
            ...readStream(n.journalStream),
            ...readStream(n.snapshotStream),
          ]),
          ...readStream(FILL_STREAM),
          ...all.map((n) => n.notices),
          ...all.map((n) => n.signin),
          ...all.map((n) => n.started),
          ENGINE_FAULT_SUBJECT_WILDCARD,
          // Answers only here (not wherever a request says: see the actor), never into a stream.
          REPLY_SUBJECT_WILDCARD,
          `${ADMIN_REPLY_SUBJECT_PREFIX}>`,
          // One shard asking another to reserve a roster username, and its answer, which only engines can hear.
          ...all.map((n) => n.names),
          `${inboxPrefix('engine')}.>`,
          ...readKv(BASKET_BUCKET),
          ...writeKv(BASKET_BUCKET),
        ],
      },
      // Another shard's start: the reservations this one waits on can be asked again at once.
      subscribe: { allow: [...all.flatMap((n) => [n.command, n.admin, n.names]), `${inboxPrefix('engine')}.>`, ENGINE_STARTED_SUBJECT_WILDCARD] },
    },
    gateway: {
      // FEED_CONTROL_SUBJECT: the operator's verdicts and acknowledgements, passed on to the feed bridge.
      publish: { allow: [...JS_BASE, ...all.map((n) => n.command), ...readKv(PRICE_BUCKET), ...readKv(BBO_BUCKET), ...readKv(BASKET_BUCKET), ...readStream(DESK_STREAM), FEED_CONTROL_SUBJECT] },
      subscribe: {
        allow: [
          `${FEED_CONTROL_REPLY_PREFIX}>`,
          REPLY_SUBJECT_WILDCARD,
          NOTICES_SUBJECT_WILDCARD,
          SIGNIN_SUBJECT_WILDCARD,
          ENGINE_STARTED_SUBJECT_WILDCARD,
          PRICE_SUBJECT_WILDCARD,
          FEED_STATUS_SUBJECT,
          PRICING_STATUS_SUBJECT,
          FEED_ALERT_SUBJECT,
          ENGINE_FAULT_SUBJECT_WILDCARD,
          `${inboxPrefix('gateway')}.>`,
        ],
      },
    },
    feed: {
      publish: {
        allow: [
          ...JS_BASE,
          FILL_SUBJECT_WILDCARD,
          SESSION_SUBJECT,
          BBO_SUBJECT_WILDCARD,
          FEED_ALERT_SUBJECT,
          FEED_STATUS_SUBJECT,
          `${FEED_CONTROL_REPLY_PREFIX}>`,
          ...readStream(FILL_STREAM),
          // The clearing messages a pending verdict holds, and the standby's kept run: kept, read back at a start, purged once decided.
          HELD_SUBJECT_WILDCARD,
          ...readStream(HELD_STREAM),
          `$JS.API.STREAM.PURGE.${HELD_STREAM}`,
          ...readKv(FEED_BUCKET),
          ...writeKv(FEED_BUCKET),
          ...readKv(BBO_BUCKET),
          ...writeKv(BBO_BUCKET),
        ],
      },
      subscribe: { allow: [`${inboxPrefix('feed')}.>`, FEED_CONTROL_SUBJECT] },
    },
    pricing: {
      publish: {
        allow: [
          ...JS_BASE,
          PRICE_SUBJECT_WILDCARD,
          // Its counters and failing writes, for the gateway's /health: nothing else of pricing's reaches an operator.
          PRICING_STATUS_SUBJECT,
          ...readKv(BBO_BUCKET),
          ...readKv(PRICE_BUCKET),
          ...writeKv(PRICE_BUCKET),
          ...readKv(BASKET_BUCKET),
          // The desk (src/pricing/desk.ts): its stream, and the engine's read-only admin subject for one dump of the accounts.
          DESK_SUBJECT_WILDCARD,
          ...readStream(DESK_STREAM),
          ...all.map((n) => n.admin),
          ...all.flatMap((n) => readStream(n.journalStream)),
          ...readStream(FILL_STREAM),
        ],
      },
      subscribe: { allow: [BBO_SUBJECT_WILDCARD, PRICE_SUBJECT_WILDCARD, NOTICES_SUBJECT_WILDCARD, `${ADMIN_REPLY_SUBJECT_PREFIX}>`, `${inboxPrefix('pricing')}.>`] },
    },
    // Administers streams and reads published state, but is nobody's stand-in: it cannot
    // act for a team or read credentials (engine commands and their replies), fake the
    // exchange (fills) or any service's output, or write history.
    operator: {
      publish: { allow: ['$JS.API.>', ...all.map((n) => n.admin)] },
      subscribe: {
        allow: [
          `${ADMIN_REPLY_SUBJECT_PREFIX}>`,
          `${inboxPrefix('operator')}.>`,
          NOTICES_SUBJECT_WILDCARD,
          PRICE_SUBJECT_WILDCARD,
          BBO_SUBJECT_WILDCARD,
          FEED_ALERT_SUBJECT,
          FEED_STATUS_SUBJECT,
          PRICING_STATUS_SUBJECT,
        ],
      },
    },
  };
}

/** A single engine's (the default). */
export const ROLE_PERMISSIONS: Record<Role, Permissions> = rolePermissions(1);
