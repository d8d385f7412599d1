import type { NatsConnection } from '@nats-io/transport-node';
import type { Config } from '../config/config.js';
import { loadBaskets } from '../config/baskets.js';
import { loadAccountsFile } from '../config/accounts.js';
import { connectNats } from '../shared/nats.js';
import { LatestPerKey } from '../shared/latest-kv.js';
import { ensureFillStream, ensureJournalStream, openBucket } from '../shared/streams.js';
import { BASKET_BUCKET, type BasketVersions } from '../../proto/marketdata.js';
import { encode } from '../../proto/codec.js';
import type { Logger } from '../shared/log.js';
import { emptyState, type EngineState } from './state.js';
import { applyEvent, basketVersions } from './core.js';
import { JournalRecordError, JournalWriter } from './journal.js';
import { replayMerged } from './replay.js';
import { hashRosterPasswords, rosterEvents, rosterForShard, sealAccountHashes } from './roster.js';
import { credentialsKeyFile, loadCredentialsKey } from '../shared/credentials-key.js';
import { shardNames, shardOfClient } from '../../proto/shards.js';
import { applyFillMessage, emptyFillStats, followFills, type FillFeedStats } from './fill-feed.js';
import { EngineActor } from './actor.js';
import { SnapshotUnusable } from './snapshot.js';
import { SnapshotStore } from './snapshot-store.js';
import { EngineFault, reportFault } from './fault.js';
import { configBaskets } from './catalog.js';
import type { JournalEvent } from '../../proto/journal.js';
import { ScoreboardWriter } from './scoreboard.js';
import { join } from 'node:path';

export interface EngineHandle {
  state: EngineState;
  actor: EngineActor;
  fills: FillFeedStats;
  nc: NatsConnection;
  /** What its 'engine ready' line says (the process's ready message carries it too). */
  ready: Record<string, unknown>;
  close(): Promise<void>;
}

/**
 * Starts the engine: rebuild state from the journal and the fill stream, take
 * in the roster, and only then serve commands, so no reply is ever computed
 * from a half-rebuilt state.
 */
export async function startEngine(cfg: Config, natsUrl: string, log: Logger, onFatal: (err: unknown) => void): Promise<EngineHandle> {
  const t0 = performance.now();
  const instruments = loadBaskets(cfg.basketsFile || undefined);
  const shards = cfg.engine?.shards ?? 1;
  const names = shardNames(cfg.engine?.shard ?? 0, shards);
  const owns = (clientId: number) => shardOfClient(clientId, shards) === names.shard;
  // Every shard reads the whole roster: its own lines become accounts, every username stays unregistrable.
  const fullRoster = cfg.accountsFile ? loadAccountsFile(cfg.accountsFile, instruments) : [];
  const { own: roster, usernames: rosterUsernames } = rosterForShard(fullRoster, names.shard, shards, cfg.accountsFile);
  const nc = await connectNats(natsUrl, shards === 1 ? 'etf-engine' : `etf-engine-${names.shard}`, { role: 'engine', credsFile: cfg.nats.creds });
  const replicas = cfg.nats.replicas ?? 1;
  await ensureJournalStream(nc, names, replicas);
  await ensureFillStream(nc, replicas);

  // The basket versions are published there as they are journaled (src/engine/actor.ts).
  const basketStore = new LatestPerKey(await openBucket(nc, BASKET_BUCKET, replicas), log);
  const snapshots = await SnapshotStore.open(nc, log, names, replicas);
  const snapshot = await snapshots.load(instruments).catch((err: unknown) => {
    if (!(err instanceof SnapshotUnusable)) throw err;
    log.warn({ reason: err.message }, 'snapshot unusable: rebuilding from the whole journal');
    return null;
  });
  const snapshotMs = Math.round(performance.now() - t0);
  const state = snapshot ?? emptyState(instruments);
  const fromSnapshot = { journalSeq: state.journalSeq, fillSeq: state.fillSeq };
  // Said before the replay, so a start that takes long is never silent (the replay logs its progress too).
  log.info({ snapshot: snapshot ? fromSnapshot : null, journalStream: names.journalStream }, 'rebuilding state: replaying the journal and the fill stream');
  const stats = emptyFillStats();
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
      fill: (m) => void applyFillMessage(state, m, stats, log, owns),
      fillSeq: () => state.fillSeq,
    },
    log,
  });
  if (replayed.journalEnd > replayed.journalSeq && replayed.journalEnd > state.journalSeq) {
    log.warn({ lastRead: replayed.journalSeq, journalEnd: replayed.journalEnd }, 'the journal ends in deleted records: writing after them');
  }
  // After the stream's last sequence even when its last records were deleted: an append names the sequence it follows.
  const journal = new JournalWriter(nc, Math.max(replayed.journalSeq, replayed.journalEnd, state.journalSeq), {
    log,
    subject: names.journalSubject,
    stream: names.journalStream,
  });
  const replayedMs = Math.round(performance.now() - t0);

  // The baskets file's baskets are journaled whenever they differ from the last journaled: compact conversions name version 0 and replay with it.
  const config = configBaskets(instruments);
  const opened: JournalEvent[] = state.catalog.configChanged(config) ? [{ t: 'config_baskets', baskets: config, ts: Date.now() }] : [];
  opened.push(...rosterEvents(state, roster, cfg.accountsFile, Date.now()));
  if (opened.length > 0) {
    state.journalSeq = await journal.append(opened, [0, state.fillSeq]);
    for (const ev of opened) applyEvent(state, ev);
  }
  const tRoster = performance.now();
  const rosterHashes = await hashRosterPasswords(state, roster, cfg.bcryptRounds, join(cfg.dataDir, shards === 1 ? 'roster-hashes.json' : `roster-hashes.${names.shard}.json`));
  const rosterMs = Math.round(performance.now() - tRoster);
  sealAccountHashes(state, loadCredentialsKey(credentialsKeyFile(cfg)));
  const tFills = performance.now();

  // Fills replayed before the actor exists are history: nobody is listening for their notices yet.
  let actor: EngineActor | undefined;
  // A loop that feeds the state and stops takes the process with it (a restart rebuilds the state), saying why on the bus first.
  const fatal = reportFault(nc, names.shard, onFatal);
  const { follower } = await followFills(
    nc,
    state,
    log,
    (c) => actor?.applied(c.acc, c.cause, c.deltas, c.cause === 'fill' ? c.fill : undefined),
    owns,
    (err) => fatal(new EngineFault('fill stream', err)),
    stats,
  );
  await follower.caughtUp;
  const fillsMs = Math.round(performance.now() - tFills);

  // One file per shard: each is the single writer of its own.
  const scoreboardFile = cfg.scoreboardFile || join(cfg.dataDir, 'conversions.log');
  const scoreboard = new ScoreboardWriter(shards === 1 ? scoreboardFile : `${scoreboardFile}.${names.shard}`, (err) =>
    log.error({ err }, 'scoreboard append failed: it is redone from the journal at the next start'),
    (ev) => state.catalog.deltas(ev),
  );
  scoreboard.startCatchUp(nc, journal.sequence, names.journalStream);

  actor = new EngineActor(
    nc,
    state,
    {
      instruments,
      maxAmount: cfg.maxAmount,
      ...(cfg.rules ? { rules: cfg.rules } : {}),
      ...(shards > 1 ? { shard: { shard: names.shard, shards, rosterUsernames } } : {}),
    },
    journal,
    log,
    (err) => fatal(new EngineFault('journal write', err)),
    { store: snapshots, every: cfg.snapshotEvery ?? 100_000 },
    (events, seq) => scoreboard.append(events, seq),
    basketStore,
  );
  await actor.start(names);
  // Published state follows the journal even if the bucket lost it: republish what is in force.
  for (const etf of state.baskets.keys()) {
    basketStore.put(etf, encode({ etf, versions: basketVersions(state, etf, instruments) } satisfies BasketVersions));
  }
  await basketStore.flushed();
  const ready = {
    accounts: state.accounts.size,
    ...(shards > 1 ? { shard: names.shard, shards } : {}),
    snapshot: snapshot ? fromSnapshot : null,
    journalSeq: journal.sequence,
    fillSeq: state.fillSeq,
    snapshotMs,
    replayMs: replayedMs - snapshotMs,
    rosterMs,
    rosterHashes,
    fillsMs,
    startMs: Math.round(performance.now() - t0),
  };
  log.info(ready, 'engine ready');
  return {
    state,
    actor,
    fills: stats,
    nc,
    ready,
    close: async () => {
      await actor.drain();
      await Promise.race([basketStore.flushed(), new Promise((r) => setTimeout(r, 5000).unref())]);
      basketStore.close();
      await follower.stop();
      await scoreboard.close();
      // A clean stop leaves a snapshot of everything, so the next start replays nothing.
      await actor.saveSnapshotNow().catch((err: unknown) => log.warn({ err }, 'snapshot at shutdown failed'));
      await nc.drain();
    },
  };
}
