import { statSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import { EventEmitter, once } from 'node:events';
import type { Instruments } from '../config/baskets.js';
import type { JournalEvent } from '../../proto/journal.js';
import { readAccountsFile, type RosterAccount, type RosterReading, type RosterRefusal } from '../config/accounts.js';
import type { CredentialsKey } from '../shared/credentials-key.js';
import type { Logger } from '../shared/log.js';
import type { EngineState } from './state.js';
import { nameDecidedElsewhere, nameRefusals, rosterConflict, rosterEvents, rosterForShard, takeRoster, type RosterHash } from './roster.js';
import type { NameHolder } from '../../proto/engine.js';
import type { NameClaim } from './name-claims.js';

/** A username reservation no shard answered is asked again this long after, if that shard's start did not prompt it first. */
const ASK_AGAIN_MS = 5_000;

/** What one reading of a changed roster file did; `error` when it changed nothing. */
export interface RosterReload {
  added: string[];
  /** Added accounts that took fills the exchange made before (JournalEvent `claimed`). */
  claimed: string[];
  passwordsChanged: string[];
  /** Lines put back after being taken out: they sign in again. */
  restored: string[];
  /** Roster accounts whose line is gone: they can no longer sign in, as after a start without their line. */
  removed: string[];
  /** Lines not taken (each as if absent): they do not read, or conflict with history. */
  refused?: RosterRefusal[];
  /** Usernames whose deciding shard did not answer (name-claims.ts): asked again when it starts, or shortly. */
  unanswered?: string[];
  /** Why nothing changed: the file could not be read, or the engine is stopping. */
  error?: string;
}

export interface RosterWatchDeps {
  file: string;
  instruments: Instruments;
  shard: number;
  shards: number;
  state: EngineState;
  /** Journals the new accounts between two commands (EngineActor.decided). */
  decided: (events: JournalEvent[]) => void;
  /** The lines' bcrypt hashes, from the cache where a password is unchanged (roster.ts rosterPasswordHashes). */
  hashes: (roster: RosterAccount[]) => Promise<Map<string, RosterHash>>;
  key: CredentialsKey;
  /** Keeps the roster taken (roster.ts saveRosterInForce): a restart while the file cannot be read starts from it. */
  saveInForce: (taken: RosterAccount[], hashes: Map<string, RosterHash>, usernames: Set<string>) => void;
  /** Tells the gateways whose sign-in changed (a password, a line taken out or put back): proto/engine.ts SignInChanges. */
  signInChanged: (usernames: string[]) => void;
  /** Every username of the file (all shards'): none may be registered. */
  usernames: (names: Set<string>) => void;
  /** With several shards: asks the shards that decide these lines' usernames to reserve them (name-claims.ts claimNames). */
  claim?: (claims: NameClaim[]) => Promise<Map<string, NameHolder>>;
  /** Lines of this shard await a username reservation: the first reading is at start, whatever the file did. */
  readAtStart?: boolean;
  log: Logger;
  intervalMs?: number;
  /** The file as it stood when the roster in force was read (rosterFileStamp): a change since then is read at once. */
  readAt: RosterFileStamp | null;
}

export type RosterFileStamp = Pick<Stats, 'mtimeMs' | 'size' | 'ino'>;

/** The file's stamp now (null: not there). */
export function rosterFileStamp(file: string): RosterFileStamp | null {
  try {
    const { mtimeMs, size, ino } = statSync(file);
    return { mtimeMs, size, ino };
  } catch {
    return null;
  }
}

const sameStamp = (a: RosterFileStamp | null, b: RosterFileStamp | null): boolean => a === b || (a !== null && b !== null && a.mtimeMs === b.mtimeMs && a.size === b.size && a.ino === b.ino);

/**
 * Reads the roster file again whenever it changes, so a team the instructor
 * adds (NDFEX reads its users.txt only at its own start) can sign in without
 * restarting the engine, from the fills the exchange already made for it. A
 * line that does not read, or that conflicts with history, is refused alone
 * (as if absent, as a restarted engine takes it) and shown on /health; a file
 * that cannot be read changes nothing. Polled (fs.watchFile): an editor that saves by renaming
 * replaces the file under a watch on it.
 */
export class RosterWatch {
  private readonly events = new EventEmitter();
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  private readonly listener = (cur: Stats, prev: Stats): void => {
    if (!sameStamp(cur, prev)) this.changed();
  };
  /** Usernames their deciding shard gave this shard's lines: it never takes one back, so they are not asked again. */
  private readonly given = new Map<string, number>();
  /** The last reading left reservations unanswered. */
  private unanswered = false;
  private askTimer: NodeJS.Timeout | null = null;

  constructor(private readonly deps: RosterWatchDeps) {}

  /** Resolves once the reading it starts, if any (an edit during the start, or reservations to ask for), is done. */
  start(): Promise<void> {
    watchFile(this.deps.file, { interval: this.deps.intervalMs ?? 1000, persistent: false }, this.listener);
    // Edited during the start (a rebuild can take seconds): the watch compares with the file as it is now, so that edit is read here.
    if (!sameStamp(rosterFileStamp(this.deps.file), this.deps.readAt) || this.deps.readAtStart) {
      const read = this.next();
      this.changed();
      return read.then(() => {});
    }
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    unwatchFile(this.deps.file, this.listener);
    if (this.askTimer) clearTimeout(this.askTimer);
    await this.running;
  }

  /** A shard started: the reservations it left unanswered are asked again now. */
  askAgain(): void {
    if (this.unanswered && !this.stopped) this.changed();
  }

  /** Resolves once no reading is under way and none left a reservation unanswered (tests: every shard up, every line taken). */
  async settled(): Promise<void> {
    while (!this.stopped && (this.running || this.unanswered)) {
      const read = this.next();
      if (!this.running) this.changed();
      // A file that does not read leaves the reservations as they were: asked again at its next change.
      if ((await read).error !== undefined) return;
    }
  }

  /** Reads the file again now, as a change the poll saw would (tests: the poll's timing is the machine's). */
  readAgain(): void {
    if (!this.stopped) this.changed();
  }

  /** The next reading's outcome (tests, and anyone who edits the file and wants to know). */
  next(): Promise<RosterReload> {
    return once(this.events, 'reload').then(([r]) => r as RosterReload);
  }

  /** One reading at a time; a change during it is read after it. */
  private changed(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        const r = await this.reload().catch((err: unknown): RosterReload => {
          // Hashing or the hash cache failed: nothing was applied (the accounts change only after both).
          this.deps.log.error({ file: this.deps.file, err }, 'the roster file changed but could not be read again: the roster in force stays (it is read again at its next change)');
          return { added: [], claimed: [], passwordsChanged: [], restored: [], removed: [], error: String(err) };
        });
        this.events.emit('reload', r);
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.running = null;
      // Asked for after the loop's last look (between its last reading and here): read now, not at the next change.
      if (this.again && !this.stopped) this.changed();
    });
  }

  private async reload(): Promise<RosterReload> {
    const { file, state, log } = this.deps;
    const unchanged = (error: string): RosterReload => {
      log.error({ file, error }, 'the roster file changed but could not be read: the roster in force stays (it is read again at its next change)');
      return { added: [], claimed: [], passwordsChanged: [], restored: [], removed: [], error };
    };
    let reading: RosterReading;
    try {
      reading = readAccountsFile(file, this.deps.instruments);
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      // Shown on /health until a reading succeeds: a roster nobody can edit any more fails nobody silently.
      state.rosterRefused = [{ line: 0, reason: `${error}: the roster read before stays in force` }, ...state.rosterRefused.filter((r) => r.line !== 0)];
      return unchanged(error);
    }
    const { own, usernames, refused: unsharded } = rosterForShard(reading.accounts, this.deps.shard, this.deps.shards);
    const hashes = await this.deps.hashes(own);
    const names = await this.askNames(own);
    if (this.stopped) return unchanged('the engine is stopping');
    // From here to the end in one turn: no command sees an account without its password.
    const nameRefused = new Set(names.refused.map((r) => r.line));
    const { events, refused: conflicts } = rosterEvents(
      state,
      own.filter((l) => !nameRefused.has(l.line)),
      Date.now(),
    );
    const taken = takeRoster(state, own, [...reading.refused, ...unsharded, ...names.refused, ...conflicts], file, log);
    this.unanswered = names.unanswered.length > 0;
    if (this.unanswered) this.askLater();
    this.deps.decided(events);
    const added = new Set(events.flatMap((e) => (e.t === 'account' ? [e.username] : [])));
    const r: RosterReload = {
      added: [...added],
      claimed: events.flatMap((e) => (e.t === 'account' && e.claimed ? [e.username] : [])),
      passwordsChanged: [],
      restored: [],
      removed: [],
      ...(state.rosterRefused.length ? { refused: state.rosterRefused } : {}),
      ...(names.unanswered.length ? { unanswered: names.unanswered.map((l) => l.username) } : {}),
    };
    for (const line of taken) {
      const acc = state.byUsername.get(line.username);
      const h = hashes.get(line.username);
      if (!acc || !h) continue;
      const restored = !added.has(line.username) && acc.passwordHash === '';
      // An unchanged password keeps its sealed hash: a new seal would differ, and every gateway would check the password again.
      if (!(added.has(line.username) || restored || h.fresh)) continue;
      acc.passwordHash = this.deps.key.seal(h.hash, line.username);
      acc.closed = false;
      if (restored) r.restored.push(line.username);
      else if (!added.has(line.username)) r.passwordsChanged.push(line.username);
    }
    const inFile = new Set(taken.map((l) => l.username));
    for (const acc of state.accounts.values()) {
      if (acc.source !== 'roster' || inFile.has(acc.username) || acc.passwordHash === '') continue;
      acc.passwordHash = '';
      acc.closed = true;
      r.removed.push(acc.username);
    }
    this.deps.usernames(usernames);
    this.deps.saveInForce(taken, hashes, usernames);
    // Gateways cache a password they checked: told now, they ask the engine at the team's next request.
    const changed = [...r.passwordsChanged, ...r.restored, ...r.removed];
    if (changed.length > 0) this.deps.signInChanged(changed);
    if (r.added.length + r.passwordsChanged.length + r.restored.length + r.removed.length > 0) log.info({ file, ...r }, 'roster file read again');
    return r;
  }

  /**
   * Asks the shards that decide this shard's lines' usernames to give them
   * (proto/shards.ts): a /register there and a line here are then ordered by
   * that one shard, and the loser is refused as on one engine. Only lines not
   * given yet are asked, and none this shard refuses itself (a name reserved
   * for it would be lost to /register for good); an open account whose shard
   * does not answer stays open (it may be from before reservations: asked again).
   */
  private async askNames(own: RosterAccount[]): Promise<{ refused: RosterRefusal[]; unanswered: RosterAccount[] }> {
    const { shard, shards, claim, state } = this.deps;
    const ask = own.filter((l) => nameDecidedElsewhere(l, shard, shards) && this.given.get(l.username) !== l.clientId && rosterConflict(state, l) === null);
    if (ask.length === 0 || !claim) return { refused: [], unanswered: [] };
    const held = await claim(ask.map((l) => ({ username: l.username, clientId: l.clientId! })));
    for (const l of ask) {
      const h = held.get(l.username);
      if (h?.source === 'roster' && h.client_id === l.clientId) this.given.set(l.username, l.clientId);
    }
    return nameRefusals(state, ask, held, shards);
  }

  private askLater(): void {
    if (this.askTimer || this.stopped) return;
    this.askTimer = setTimeout(() => {
      this.askTimer = null;
      this.askAgain();
    }, ASK_AGAIN_MS);
    this.askTimer.unref();
  }
}
