import type { NatsConnection } from '@nats-io/transport-node';
import type { Config } from '../config/config.js';
import { loadBaskets, type Instruments } from '../config/baskets.js';
import { readAccountsFile, type RosterAccount, type RosterReading, type RosterRefusal } from '../config/accounts.js';
import { connectNats } from '../shared/nats.js';
import { retryTransient } from '../shared/js-retry.js';
import { LatestPerKey } from '../shared/latest-kv.js';
import { ensureFillStream, ensureJournalStream, openBucket } from '../shared/streams.js';
import { BASKET_BUCKET, type BasketVersions } from '../../proto/marketdata.js';
import { encode } from '../../proto/codec.js';
import type { EngineStarted, SignInChanges } from '../../proto/engine.js';
import type { Logger } from '../shared/log.js';
import type { EngineState } from './state.js';
import { basketVersions, type CoreConfig } from './core.js';
import type { JournalWriter } from './journal.js';
import { claimNames, type NameClaim } from './name-claims.js';
import { ENGINE_STARTED_SUBJECT_WILDCARD } from '../../proto/subjects.js';
import { loadRosterInForce, nameDecidedElsewhere, rosterForShard, rosterPasswordHashes, saveRosterInForce, sealAccountHashes, setRosterHashes, takeRoster, type RosterHash, type RosterInForce } from './roster.js';
import { RosterWatch, rosterFileStamp, type RosterFileStamp } from './roster-watch.js';
import { credentialsKeyFile, loadCredentialsKey } from '../shared/credentials-key.js';
import { shardNames, shardOfClient, type ShardNames } from '../../proto/shards.js';
import { followFills, type FillFeedStats } from './fill-feed.js';
import { EngineActor } from './actor.js';
import { SnapshotStore } from './snapshot-store.js';
import { EngineFault, reportFault } from './fault.js';
import { ScoreboardWriter } from './scoreboard.js';
import { journalConfiguration, rebuildState } from './rebuild.js';
import { join } from 'node:path';

export interface EngineHandle {
  state: EngineState;
  actor: EngineActor;
  fills: FillFeedStats;
  nc: NatsConnection;
  /** Reads the roster file again at each change (null without one). */
  roster: RosterWatch | null;
  /** What its 'engine ready' line says (the process's ready message carries it too). */
  ready: Record<string, unknown>;
  close(): Promise<void>;
}

/** What the engine takes from its configuration, read in one place before anything starts. */
interface EngineSetup {
  instruments: Instruments;
  names: ShardNames;
  owns: (clientId: number) => boolean;
  /** This shard's accounts of the roster. */
  roster: RosterAccount[];
  /** The lines of the file not taken, each as if absent. */
  rosterRefused: RosterRefusal[];
  /** The roster of the last reading, when the file cannot be read now: the start takes it instead. */
  rosterInForce: RosterInForce | null;
  /** Where each reading taken saves the roster in force (saveRosterInForce). */
  rosterInForceFile: string;
  /** Every username of the file (all shards'). */
  rosterUsernames: Set<string>;
  accountsFile: string;
  /** The roster file as it stood when read: an edit during the start is read once the engine serves. */
  accountsReadAt: RosterFileStamp | null;
  natsName: string;
  natsCreds: string | undefined;
  /** Copies of each stream and bucket it creates. */
  replicas: number;
  bcryptRounds: number;
  rosterHashesFile: string;
  credentialsKeyFile: string;
  scoreboardFile: string;
  core: CoreConfig;
  snapshotEvery: number;
  /** How often the roster file is looked at for changes (default 1 s). */
  rosterPollMs?: number;
}

function engineSetup(cfg: Config): EngineSetup {
  const instruments = loadBaskets(cfg.basketsFile || undefined);
  const shards = cfg.engine?.shards ?? 1;
  const names = shardNames(cfg.engine?.shard ?? 0, shards);
  // Every shard reads the whole roster: its own lines become accounts, every username stays unregistrable.
  const accountsReadAt = cfg.accountsFile ? rosterFileStamp(cfg.accountsFile) : null;
  const rosterInForceFile = join(cfg.dataDir, shards === 1 ? 'roster-in-force.json' : `roster-in-force.${names.shard}.json`);
  // Line by line: a line refused (reported on /health) must not keep a restarted engine from serving everyone else.
  const { reading, inForce } = readRoster(cfg.accountsFile, instruments, rosterInForceFile);
  const { own: roster, usernames, refused } = rosterForShard(reading.accounts, names.shard, shards);
  const rosterUsernames = inForce?.usernames ?? usernames;
  // One scoreboard file per shard: each is the single writer of its own.
  const scoreboardFile = cfg.scoreboardFile || join(cfg.dataDir, 'conversions.log');
  return {
    instruments,
    names,
    owns: (clientId) => shardOfClient(clientId, shards) === names.shard,
    roster,
    rosterRefused: [...reading.refused, ...refused],
    rosterInForce: inForce,
    rosterInForceFile,
    rosterUsernames,
    accountsFile: cfg.accountsFile,
    accountsReadAt,
    natsName: shards === 1 ? 'etf-engine' : `etf-engine-${names.shard}`,
    natsCreds: cfg.nats.creds,
    replicas: cfg.nats.replicas ?? 1,
    bcryptRounds: cfg.bcryptRounds,
    rosterHashesFile: join(cfg.dataDir, shards === 1 ? 'roster-hashes.json' : `roster-hashes.${names.shard}.json`),
    credentialsKeyFile: credentialsKeyFile(cfg),
    scoreboardFile: shards === 1 ? scoreboardFile : `${scoreboardFile}.${names.shard}`,
    core: {
      instruments,
      maxAmount: cfg.maxAmount,
      ...(cfg.rules ? { rules: cfg.rules } : {}),
      ...(shards > 1 ? { shard: { shard: names.shard, shards, rosterUsernames } } : {}),
    },
    snapshotEvery: cfg.snapshotEvery ?? 100_000,
    ...(cfg.rosterPollMs !== undefined ? { rosterPollMs: cfg.rosterPollMs } : {}),
  };
}

/**
 * The roster file read line by line; when it cannot be read at all (moved,
 * deleted, half-saved), the roster of the last reading taken, if one was
 * saved: a restarted engine serves with it (shown on /health) instead of
 * exiting on a configuration error, which the launcher would not restart.
 */
function readRoster(file: string, instruments: Instruments, inForceFile: string): { reading: RosterReading; inForce: RosterInForce | null } {
  if (!file) return { reading: { accounts: [], refused: [] }, inForce: null };
  try {
    return { reading: readAccountsFile(file, instruments), inForce: null };
  } catch (err) {
    const inForce = loadRosterInForce(inForceFile);
    if (!inForce) throw err;
    return { reading: { accounts: [], refused: [{ line: 0, reason: `${(err as Error).message}: the roster last read stays in force until it reads again` }] }, inForce };
  }
}

/** How long a start rides out JetStream not answering (a cluster electing its leaders) before it fails. */
const STARTUP_JS_MS = 60_000;

/**
 * Starts the engine: rebuild state from the journal and the fill stream, take
 * in the roster, and only then serve commands, so no reply is ever computed
 * from a half-rebuilt state.
 */
export async function startEngine(cfg: Config, natsUrl: string, log: Logger, onFatal: (err: unknown) => void): Promise<EngineHandle> {
  const t0 = performance.now();
  const setup = engineSetup(cfg);
  const { names } = setup;
  const nc = await connectNats(natsUrl, setup.natsName, { role: 'engine', credsFile: setup.natsCreds, log });
  // A cluster may still be electing its leaders as the engine starts: its streams are asked for again until they
  // answer (STARTUP_JS_MS), not taken for a failed start (the process would exit, to be started again).
  const startup = <T>(what: string, f: () => Promise<T>) => retryTransient(what, f, { deadlineMs: STARTUP_JS_MS, log });
  await startup('journal and fill streams', async () => {
    await ensureJournalStream(nc, names, setup.replicas);
    await ensureFillStream(nc, setup.replicas);
  });
  // The basket versions are published there as they are journaled (src/engine/actor.ts).
  const basketStore = new LatestPerKey(await startup('baskets bucket', () => openBucket(nc, BASKET_BUCKET, setup.replicas)), log);
  const snapshots = await startup('snapshot store', () => SnapshotStore.open(nc, log, names, setup.replicas));
  // A new line whose username another shard decides opens once that shard gives the name (RosterWatch), not here.
  const atStart = (state: EngineState) => setup.roster.filter((l) => !nameDecidedElsewhere(l, names.shard, names.shards) || state.byUsername.has(l.username));
  const configure = (state: EngineState, journal: JournalWriter) => journalConfiguration(state, journal, setup.instruments, atStart(state), log);
  const rebuilt = await rebuildState(nc, setup, snapshots, log, t0, configure);
  const { state, journal } = rebuilt;
  // Later starts: what the configuration changed, at the fill position the state has reached.
  const conflicts = await configure(state, journal);
  const roster = takeRoster(state, atStart(state), [...setup.rosterRefused, ...conflicts], setup.accountsFile, log);
  const tRoster = performance.now();
  const hashes = setup.rosterInForce?.hashes ?? (await rosterPasswordHashes(roster, setup.bcryptRounds, setup.rosterHashesFile));
  const rosterHashes = setRosterHashes(state, hashes);
  const keepInForce = (taken: RosterAccount[], h: Map<string, RosterHash>, usernames: Set<string>) => {
    try {
      saveRosterInForce(setup.rosterInForceFile, taken, h, usernames);
    } catch (err) {
      log.error({ file: setup.rosterInForceFile, err }, 'the roster in force could not be saved: a restart while the roster file cannot be read would stop the engine');
    }
  };
  if (setup.accountsFile && !setup.rosterInForce) keepInForce(roster, hashes, setup.rosterUsernames);
  const rosterMs = Math.round(performance.now() - tRoster);
  const credentialsKey = loadCredentialsKey(setup.credentialsKeyFile);
  sealAccountHashes(state, credentialsKey);

  const tFills = performance.now();
  // A loop that feeds the state and stops takes the process with it (a restart rebuilds the state), saying why on the bus first.
  const fatal = reportFault(nc, names.shard, onFatal);
  const fills = await followLiveFills(nc, state, setup, rebuilt.fills, (err) => fatal(new EngineFault('fill stream', err)), log);
  const fillsMs = Math.round(performance.now() - tFills);

  const scoreboard = startScoreboard(nc, state, journal, setup, log);
  const actor = (fills.live.actor = new EngineActor(
    nc,
    state,
    setup.core,
    journal,
    log,
    // The actor names what failed when it is not its journal write (a publish the connection refused).
    (err) => fatal(err instanceof EngineFault ? err : new EngineFault('journal write', err)),
    { store: snapshots, every: setup.snapshotEvery },
    (events, seq) => scoreboard.append(events, seq),
    basketStore,
  ));
  await actor.start(names);
  const rosterWatch = setup.accountsFile
    ? new RosterWatch({
        file: setup.accountsFile,
        instruments: setup.instruments,
        shard: names.shard,
        shards: names.shards,
        state,
        decided: (events) => actor.decided(events),
        hashes: (lines) => rosterPasswordHashes(lines, setup.bcryptRounds, setup.rosterHashesFile),
        saveInForce: keepInForce,
        key: credentialsKey,
        signInChanged: (usernames) => {
          try {
            nc.publish(names.signin, encode({ v: 1, usernames } satisfies SignInChanges));
          } catch (err) {
            // Thrown (a connection closed or draining), it was taken for the roster file not read, though its accounts were taken.
            log.warn({ err, usernames: usernames.length }, 'sign-in changes not published: gateways keep their cached passwords until they ask the engine again');
          }
        },
        usernames: (all) => {
          if (setup.core.shard) setup.core.shard.rosterUsernames = all;
        },
        ...(names.shards > 1
          ? {
              claim: (claims: NameClaim[]) => claimNames(nc, claims, names.shards, cfg.requestTimeoutMs, log),
              readAtStart: setup.roster.some((l) => nameDecidedElsewhere(l, names.shard, names.shards)),
            }
          : {}),
        log,
        readAt: setup.accountsReadAt,
        ...(setup.rosterPollMs !== undefined ? { intervalMs: setup.rosterPollMs } : {}),
      })
    : null;
  if (rosterWatch && names.shards > 1) {
    // Another shard that starts can answer the reservations this one waits on.
    nc.subscribe(ENGINE_STARTED_SUBJECT_WILDCARD, {
      callback: (err, msg) => {
        if (!err && msg.subject !== names.started) rosterWatch.askAgain();
      },
    });
  }
  // Ready with the lines whose usernames other shards decide taken, where those shards answer.
  await rosterWatch?.start();
  await republishBaskets(state, basketStore, setup.instruments);
  const ready = {
    accounts: state.accounts.size,
    ...(names.shards > 1 ? { shard: names.shard, shards: names.shards } : {}),
    snapshot: rebuilt.snapshot,
    journalSeq: journal.sequence,
    fillSeq: state.fillSeq,
    // Client_ids the exchange filled that no account has: their fills wait for a roster line naming them.
    unclaimedClientIds: state.unclaimed.size,
    rosterRefused: state.rosterRefused.length,
    snapshotMs: rebuilt.snapshotMs,
    replayMs: rebuilt.replayMs,
    rosterMs,
    rosterHashes,
    fillsMs,
    startMs: Math.round(performance.now() - t0),
  };
  // Changes applied while starting (fills stored while no engine ran, applied in the rebuild or before the actor
  // existed; notices of a group the last run died before settling) were published to nobody: streams re-snapshot.
  nc.publish(names.started, encode({ v: 1, shard: names.shard, shards: names.shards, ts: Date.now() } satisfies EngineStarted));
  log.info(ready, 'engine ready');
  return {
    state,
    actor,
    fills: rebuilt.fills,
    nc,
    roster: rosterWatch,
    ready,
    close: async () => {
      await rosterWatch?.stop();
      await actor.drain();
      await Promise.race([basketStore.flushed(), new Promise((r) => setTimeout(r, 5000).unref())]);
      basketStore.close();
      await fills.follower.stop();
      await scoreboard.close();
      // A clean stop leaves a snapshot of everything, so the next start replays nothing (none after a fault: saveSnapshotNow).
      await actor.saveSnapshotNow().catch((err: unknown) => log.warn({ err }, 'snapshot at shutdown failed'));
      // Closed under the engine, the connection has nothing to drain: a rejection here made a stop look failed.
      if (!nc.isClosed()) await nc.drain();
    },
  };
}

/**
 * The fill stream after the rebuild, applied as it comes. Fills replayed
 * before the actor exists are history: nobody is listening for their notices
 * yet, so the actor is told of each only once it is set in `live`.
 */
async function followLiveFills(nc: NatsConnection, state: EngineState, setup: EngineSetup, stats: FillFeedStats, onError: (err: unknown) => void, log: Logger) {
  const live: { actor?: EngineActor } = {};
  const { follower } = await followFills(nc, state, log, (c) => live.actor?.applied(c.acc, c.cause, c.deltas, c.cause === 'fill' ? c.fill : undefined), setup.owns, onError, stats);
  await follower.caughtUp;
  return { follower, live };
}

/** The conversions scoreboard file, caught up from the journal in the background and appended to as batches become durable. */
function startScoreboard(nc: NatsConnection, state: EngineState, journal: JournalWriter, setup: EngineSetup, log: Logger): ScoreboardWriter {
  const scoreboard = new ScoreboardWriter(
    setup.scoreboardFile,
    (err) => {
      log.error({ err }, 'scoreboard append failed: its lines are tried again (and redone from the journal at the next start)');
      // NDFEX grades from this file: a log line nobody reads left conversions out of it while /health said ok.
      state.scoreboardFailing = { error: err instanceof Error ? err.message : String(err), since: state.scoreboardFailing?.since ?? Date.now() };
    },
    (ev) => state.catalog.flatDeltas(ev),
    () => {
      log.info({ file: setup.scoreboardFile, since: state.scoreboardFailing?.since }, 'scoreboard file written again');
      state.scoreboardFailing = null;
    },
  );
  scoreboard.startCatchUp(nc, journal.sequence, setup.names.journalStream);
  return scoreboard;
}

/** Published state follows the journal even if the bucket lost it: what is in force is published again. */
async function republishBaskets(state: EngineState, basketStore: LatestPerKey, instruments: Instruments): Promise<void> {
  for (const etf of state.baskets.keys()) {
    basketStore.put(etf, encode({ etf, versions: basketVersions(state, etf, instruments) } satisfies BasketVersions));
  }
  await basketStore.flushed();
}
