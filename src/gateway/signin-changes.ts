import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { decodeIf } from '../../proto/codec.js';
import { signInChangesShape } from '../../proto/engine.js';
import { SIGNIN_SUBJECT_WILDCARD } from '../../proto/subjects.js';
import type { Logger } from '../shared/log.js';

/** Who acts on a change: the names whose sign-in changed, or null when any may have (NATS reconnected). */
export type SignInListener = (usernames: readonly string[] | null) => void;

/**
 * Hears the engine say whose sign-in changed (a roster password changed, a
 * line taken out or put back) and tells the gateway's parts: the password
 * cache expires those accounts, so the instructor's edit counts at the team's
 * next request, not up to credentialsCacheMs later; their WebSocket streams
 * close. After a NATS reconnect every account may have changed (core NATS
 * drops what was published meanwhile): listeners hear null.
 */
export class SignInChangesFollower {
  private readonly sub: Subscription;
  private closed = false;
  /** Messages heard and those that were not SignInChanges (tests, logs). */
  readonly stats = { heard: 0, unreadable: 0 };

  constructor(nc: NatsConnection, listeners: SignInListener[], log: Logger) {
    this.sub = nc.subscribe(SIGNIN_SUBJECT_WILDCARD, {
      callback: (err, msg) => {
        if (err) return;
        const changes = decodeIf(msg.data, signInChangesShape);
        if (!changes) {
          this.stats.unreadable++;
          log.warn({ subject: msg.subject }, 'a sign-in change that does not read: skipped (the cache time still bounds it)');
          return;
        }
        this.stats.heard++;
        for (const l of listeners) l(changes.usernames);
        log.info({ usernames: changes.usernames }, 'sign-in changed: those accounts are checked with the engine at their next request');
      },
    });
    void (async () => {
      for await (const s of nc.status()) {
        if (this.closed) return;
        if (s.type === 'reconnect') for (const l of listeners) l(null);
      }
    })();
  }

  close(): void {
    this.closed = true;
    this.sub.unsubscribe();
  }
}
