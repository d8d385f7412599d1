import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { encode, decode } from '../../proto/codec.js';
import { JOURNAL_SUBJECT, JOURNAL_STREAM } from '../../proto/subjects.js';
import { JOURNAL_VERSION, JOURNAL_VERSIONS_READ, type JournalBatch, type JournalEvent } from '../../proto/journal.js';
import { readStream } from '../shared/stream-reader.js';

/**
 * Appends journal batches. Each append names the sequence it expects to
 * follow, so a second engine writing by mistake fails its write instead of
 * interleaving history (the single writer is enforced, not assumed).
 */
export class JournalWriter {
  private readonly js: JetStreamClient;
  constructor(
    nc: NatsConnection,
    private lastSeq: number,
  ) {
    this.js = jetstream(nc);
  }

  get sequence(): number {
    return this.lastSeq;
  }

  async append(events: JournalEvent[]): Promise<number> {
    const batch: JournalBatch = { v: JOURNAL_VERSION, events };
    const ack = await this.js.publish(JOURNAL_SUBJECT, encode(batch), {
      expect: { lastSequence: this.lastSeq },
      timeout: 10_000,
    });
    this.lastSeq = ack.seq;
    return ack.seq;
  }
}

/** Replays the journal from `fromSeq`, handing each batch's events to `apply`. Returns the last sequence read. */
export async function replayJournal(
  nc: NatsConnection,
  fromSeq: number,
  apply: (events: JournalEvent[], seq: number) => void,
  untilSeq?: number,
): Promise<number> {
  let last = fromSeq - 1;
  const reader = await readStream(
    nc,
    JOURNAL_STREAM,
    fromSeq,
    (m) => {
      const batch = decode<JournalBatch>(m.data);
      if (!JOURNAL_VERSIONS_READ.includes(batch.v)) throw new Error(`journal seq ${m.seq}: unsupported version ${batch.v}`);
      apply(batch.events, m.seq);
      last = m.seq;
    },
    { follow: false, ...(untilSeq !== undefined ? { untilSeq } : {}) },
  );
  await reader.caughtUp;
  await reader.stop();
  return last;
}
