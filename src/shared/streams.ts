import { jetstreamManager, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { DESK_STREAM_CONFIG, FILL_STREAM_CONFIG, HELD_STREAM_CONFIG } from '../../proto/streams.js';
import { journalStreamConfig, shardNames, snapshotStreamConfig, type ShardNames } from '../../proto/shards.js';
import { FEED_BUCKET } from '../../proto/feed.js';
import { BASKET_BUCKET, BBO_BUCKET, PRICE_BUCKET } from '../../proto/marketdata.js';
import { isStreamNotFound } from './js-errors.js';

/**
 * `replicas` everywhere below: copies of what is created (the config's
 * nats.replicas, NATS_REPLICAS); 1 on one server.
 *
 * Streams and buckets are created by whoever may (the launcher, as operator,
 * before any service starts; anyone on an open server). A service whose role
 * may not administer streams finds them there and only reads their info.
 */
async function ensureStream(jsm: JetStreamManager, cfg: Partial<StreamConfig> & { name: string }, replicas: number): Promise<void> {
  if (await streamExists(jsm, cfg.name)) return;
  try {
    await jsm.streams.add({ ...cfg, num_replicas: replicas });
  } catch (err) {
    // Another process may have created it between our two calls: then it is there now, and this error says nothing.
    if (!(await streamExists(jsm, cfg.name))) throw err;
  }
}

/** Whether the stream is there: only "stream not found" (10059) says no; any other error (a timeout, a refused permission) is thrown. */
export async function streamExists(jsm: JetStreamManager, name: string): Promise<boolean> {
  try {
    await jsm.streams.info(name);
    return true;
  } catch (err) {
    if (isStreamNotFound(err)) return false;
    throw err;
  }
}

export async function ensureFillStream(nc: NatsConnection, replicas = 1): Promise<void> {
  await ensureStream(await jetstreamManager(nc), FILL_STREAM_CONFIG, replicas);
}

/** The clearing messages pending exchange-session verdicts hold (proto/feed.ts HeldEntry): the feed bridge writes them. */
export async function ensureHeldStream(nc: NatsConnection, replicas = 1): Promise<void> {
  await ensureStream(await jetstreamManager(nc), HELD_STREAM_CONFIG, replicas);
}

/** The desk's samples and scorecards (proto/desk.ts): the pricing service writes them. */
export async function ensureDeskStream(nc: NatsConnection, replicas = 1): Promise<void> {
  await ensureStream(await jetstreamManager(nc), DESK_STREAM_CONFIG, replicas);
}

/** One engine's names: the single engine's unless a shard's are given. */
const SINGLE = shardNames(0, 1);

export async function ensureJournalStream(nc: NatsConnection, names: ShardNames = SINGLE, replicas = 1): Promise<void> {
  await ensureStream(await jetstreamManager(nc), journalStreamConfig(names), replicas);
}

export async function ensureSnapshotStream(nc: NatsConnection, names: ShardNames = SINGLE, replicas = 1): Promise<void> {
  await ensureStream(await jetstreamManager(nc), snapshotStreamConfig(names), replicas);
}

/** Every KV bucket's settings: the contract between its writer and its readers. */
export const BUCKETS = { [FEED_BUCKET]: { history: 1 }, [BBO_BUCKET]: { history: 1 }, [PRICE_BUCKET]: { history: 1 }, [BASKET_BUCKET]: { history: 1 } } as const;

/** Opens a bucket, creating it only when it does not exist yet (creating is stream administration). */
export async function openBucket(nc: NatsConnection, bucket: keyof typeof BUCKETS, replicas = 1): Promise<KV> {
  const kvm = new Kvm(nc);
  const jsm = await jetstreamManager(nc);
  if (await streamExists(jsm, `KV_${bucket}`)) return kvm.open(bucket);
  return kvm.create(bucket, { ...BUCKETS[bucket], replicas }).catch(async (err: unknown) => {
    // Created by another process meanwhile: open that one.
    if (await streamExists(jsm, `KV_${bucket}`)) return kvm.open(bucket);
    throw err;
  });
}

/**
 * Everything the services rely on, created up front by the operator role (the
 * launcher), each with `replicas` copies (NATS_REPLICAS). A stream that exists
 * with fewer copies is raised to `replicas` (JetStream copies it to the new peers).
 */
export async function provisionStreams(nc: NatsConnection, replicas = 1, shards = 1): Promise<void> {
  const engines = Array.from({ length: shards }, (_, k) => shardNames(k, shards));
  await ensureFillStream(nc, replicas);
  await ensureHeldStream(nc, replicas);
  await ensureDeskStream(nc, replicas);
  for (const n of engines) {
    await ensureJournalStream(nc, n, replicas);
    await ensureSnapshotStream(nc, n, replicas);
  }
  for (const bucket of Object.keys(BUCKETS) as (keyof typeof BUCKETS)[]) await openBucket(nc, bucket, replicas);
  const jsm = await jetstreamManager(nc);
  const names = [FILL_STREAM_CONFIG.name, HELD_STREAM_CONFIG.name, DESK_STREAM_CONFIG.name, ...engines.flatMap((n) => [n.journalStream, n.snapshotStream]), ...Object.keys(BUCKETS).map((b) => `KV_${b}`)];
  for (const name of names) {
    const { config } = await jsm.streams.info(name);
    if ((config.num_replicas ?? 1) < replicas) await jsm.streams.update(name, { ...config, num_replicas: replicas });
  }
}
