/**
 * Who may do what on the NATS bus. The launcher's nats-server gives each role
 * its own user with exactly these permissions (src/launcher/nats-auth.ts), so
 * another user of the host who reaches the port can do nothing, and a leaked
 * service password is limited to that service's job:
 *   only the feed bridge publishes fills and session markers,
 *   only the gateway sends commands to the engine (and so reads credentials),
 *   only the engine writes the journal and snapshots,
 *   only the operator administers streams (creates them, at the launcher's start),
 *   and it reads published state but can neither act for a team nor forge output.
 * (The simulator stands in for the exchange on multicast only: it has no NATS user.)
 */
import { BASKET_BUCKET, BBO_BUCKET, BBO_SUBJECT_WILDCARD, FEED_ALERT_SUBJECT, FEED_STATUS_SUBJECT, PRICE_BUCKET, PRICE_SUBJECT_WILDCARD } from './marketdata.js';
import { FEED_BUCKET, FEED_CONTROL_REPLY_PREFIX, FEED_CONTROL_SUBJECT } from './feed.js';
import { shardNames } from './shards.js';
import {
  FILL_STREAM,
  FILL_SUBJECT_WILDCARD,
  NOTICES_SUBJECT_WILDCARD,
  ADMIN_REPLY_SUBJECT_PREFIX,
  REPLY_SUBJECT_WILDCARD,
  SESSION_SUBJECT,
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
          // Answers only here (not wherever a request says: see the actor), never into a stream.
          REPLY_SUBJECT_WILDCARD,
          `${ADMIN_REPLY_SUBJECT_PREFIX}>`,
          ...readKv(BASKET_BUCKET),
          ...writeKv(BASKET_BUCKET),
        ],
      },
      subscribe: { allow: [...all.flatMap((n) => [n.command, n.admin]), `${inboxPrefix('engine')}.>`] },
    },
    gateway: {
      // FEED_CONTROL_SUBJECT: the operator's verdicts and acknowledgements, passed on to the feed bridge.
      publish: { allow: [...JS_BASE, ...all.map((n) => n.command), ...readKv(PRICE_BUCKET), ...readKv(BBO_BUCKET), ...readKv(BASKET_BUCKET), FEED_CONTROL_SUBJECT] },
      subscribe: {
        allow: [
          `${FEED_CONTROL_REPLY_PREFIX}>`,
          REPLY_SUBJECT_WILDCARD,
          NOTICES_SUBJECT_WILDCARD,
          PRICE_SUBJECT_WILDCARD,
          FEED_STATUS_SUBJECT,
          FEED_ALERT_SUBJECT,
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
          ...readKv(FEED_BUCKET),
          ...writeKv(FEED_BUCKET),
          ...readKv(BBO_BUCKET),
          ...writeKv(BBO_BUCKET),
        ],
      },
      subscribe: { allow: [`${inboxPrefix('feed')}.>`, FEED_CONTROL_SUBJECT] },
    },
    pricing: {
      publish: { allow: [...JS_BASE, PRICE_SUBJECT_WILDCARD, ...readKv(BBO_BUCKET), ...readKv(PRICE_BUCKET), ...writeKv(PRICE_BUCKET), ...readKv(BASKET_BUCKET)] },
      subscribe: { allow: [BBO_SUBJECT_WILDCARD, `${inboxPrefix('pricing')}.>`] },
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
        ],
      },
    },
  };
}

/** A single engine's (the default). */
export const ROLE_PERMISSIONS: Record<Role, Permissions> = rolePermissions(1);
