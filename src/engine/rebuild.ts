import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { retryTransient } from '../shared/js-retry.js';
import type { Instruments } from '../config/baskets.js';
import type { JournalEvent } from '../../proto/journal.js';
import type { ShardNames } from '../../proto/shards.js';
import type { Logger } from '../shared/log.js';
import { configBaskets } from './catalog.js';
import { applyEvent } from './core.js';
import { applyFillMessage, emptyFillStats, type FillFeedStats } from './fill-feed.js';
import { JournalRecordError, JournalWriter } from './journal.js';
import { replayMerged } from './replay.js';
import { rosterEvents } from './roster.js';
import type { RosterAccount, RosterRefusal } from '../config/accounts.js';
import { SnapshotUnusable } from './snapshot.js';
import type { SnapshotStore } from './snapshot-store.js';
import { emptyState, type EngineState } from './state.js';

export interface Rebuilt {
  state: EngineState;
  journal: JournalWriter;
  fills: FillFeedStats;
  /** Where the snapshot started the replay (null: from the beginning). */
  snapshot: { journalSeq: number; fillSeq: number } | null;
  snapshotMs: number;
  replayMs: number;
}

/**
 * The state as the journal and the fill stream leave it: the last usable
 * snapshot, then every journal event and fill after it, merged in the order
 * the engine applied them; and a journal writer that appends after the last.
 */
export async function rebuildState(
  nc: NatsConnection,
  at: { names: ShardNames; instruments: Instruments; owns: (clientId: number) => boolean },
  snapshots: SnapshotStore,
  log: Logger,
  /** When the start began: the timings count from there. */
  t0: number,
  /**
   * Journals the configuration (the roster's accounts, the baskets) on a first start (no snapshot, an empty journal)
   * before any fill is replayed: fills the bridge stored before the engine ever ran are then its teams', not unknown
   * client_ids to ignore.
   */
  firstStart?: (state: EngineState, journal: JournalWriter) => Promise<unknown>,
): Promise<Rebuilt> {
  const { names } = at;
  // A timeout is not "no snapshot" (that would replay everything, or worse, start empty): asked again while a cluster elects.
  const snapshot = await retryTransient('snapshot load', () => snapshots.load(at.instruments), { deadlineMs: 60_000, log }).catch((err: unknown) => {
    if (!(err instanceof SnapshotUnusable)) throw err;
    log.warn({ reason: err.message }, 'snapshot unusable: rebuilding from the whole journal');
    return null;
  });
  const snapshotMs = Math.round(performance.now() - t0);
  const state = snapshot ?? emptyState(at.instruments);
  const fromSnapshot = snapshot ? { journalSeq: state.journalSeq, fillSeq: state.fillSeq } : null;
  // Said before the replay, so a start that takes long is never silent (the replay logs its progress too).
  log.info({ snapshot: fromSnapshot, journalStream: names.journalStream }, 'rebuilding state: replaying the journal and the fill stream');
  const fills = emptyFillStats();
  const journalOptions = { log, subject: names.journalSubject, stream: names.journalStream };
  // A cluster may still be electing the journal's leader at a start: asked again until it answers, as the journal's writes are.
  const journalEmpty = async () =>
    (await retryTransient('journal info', async () => (await jetstreamManager(nc)).streams.info(names.journalStream), { deadlineMs: 30_000, log })).state.last_seq === 0;
  if (firstStart && !snapshot && (await journalEmpty())) {
    await firstStart(state, new JournalWriter(nc, 0, journalOptions));
  }
  // Each journal event goes back among the fills where the engine applied it (src/engine/replay.ts).
  const replayed = await replayMerged(nc, {
    journalStream: names.journalStream,
    fromJournalSeq: state.journalSeq + 1,
    fromFillSeq: state.fillSeq + 1,
    unpositioned: 'journal-first',
    sink: {
      event: (ev, seq) => {
        try {
          applyEvent(state, ev);
        } catch (err) {
          throw new JournalRecordError(seq, names.journalStream, `an event that cannot be applied (${ev.t}: ${err instanceof Error ? err.message : String(err)})`);
        }
      },
      batchDone: (seq) => (state.journalSeq = seq),
      fill: (m) => void applyFillMessage(state, m, fills, log, at.owns),
      fillSeq: () => state.fillSeq,
    },
    log,
  });
  if (replayed.journalEnd > replayed.journalSeq && replayed.journalEnd > state.journalSeq) {
    log.warn({ lastRead: replayed.journalSeq, journalEnd: replayed.journalEnd }, 'the journal ends in deleted records: writing after them');
  }
  // After the stream's last sequence even when its last records were deleted: an append names the sequence it follows.
  const journal = new JournalWriter(nc, Math.max(replayed.journalSeq, replayed.journalEnd, state.journalSeq), journalOptions);
  return { state, journal, fills, snapshot: fromSnapshot, snapshotMs, replayMs: Math.round(performance.now() - t0) - snapshotMs };
}

/**
 * Journals what the configuration changed since the last start: the baskets
 * file's baskets when they differ from the last journaled (compact conversions
 * name version 0 and replay with it), and the roster's new accounts.
 */
export async function journalConfiguration(state: EngineState, journal: JournalWriter, instruments: Instruments, roster: RosterAccount[], log?: Logger): Promise<RosterRefusal[]> {
  const config = configBaskets(instruments);
  const opened: JournalEvent[] = state.catalog.configChanged(config) ? [{ t: 'config_baskets', baskets: config, ts: Date.now() }] : [];
  const accounts = rosterEvents(state, roster, Date.now());
  opened.push(...accounts.events);
  if (opened.length === 0) return accounts.refused;
  state.journalSeq = await journal.append(opened, [0, state.fillSeq]);
  for (const ev of opened) {
    applyEvent(state, ev);
    if (ev.t === 'account' && ev.claimed) {
      log?.info({ clientId: ev.clientId, username: ev.username, fills: ev.claimed.fills, positions: ev.claimed.positions, cash: ev.claimed.cash }, 'a roster account added after its client_id traded: it starts from those fills');
    }
  }
  return accounts.refused;
}
