import { jetstreamManager, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { FILL_STREAM_CONFIG, JOURNAL_STREAM_CONFIG } from '../../proto/streams.js';

async function ensureStream(jsm: JetStreamManager, cfg: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.info(cfg.name);
  } catch {
    try {
      await jsm.streams.add(cfg);
    } catch (err) {
      // Another process may have created it between our two calls.
      await jsm.streams.info(cfg.name).catch(() => {
        throw err;
      });
    }
  }
}

export async function ensureFillStream(nc: NatsConnection): Promise<void> {
  await ensureStream(await jetstreamManager(nc), FILL_STREAM_CONFIG);
}

export async function ensureJournalStream(nc: NatsConnection): Promise<void> {
  await ensureStream(await jetstreamManager(nc), JOURNAL_STREAM_CONFIG);
}
