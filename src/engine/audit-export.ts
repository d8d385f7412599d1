import type { NatsConnection } from '@nats-io/transport-node';
import { shardNames } from '../../proto/shards.js';
import type { Instruments } from '../config/baskets.js';
import { jetstreamManager } from '@nats-io/jetstream';
import { replayJournal } from './journal.js';
import { auditEntry } from './core.js';
import { Catalog } from './catalog.js';
import { entryWords } from '../../proto/messages.js';
import type { OperatorAuditEntry } from '../../proto/audit.js';

/**
 * The whole audit trail, oldest first, as NDJSON lines of AuditEntry
 * (proto/audit.ts), read from the journal alone: every registration,
 * creation and redemption, accepted or rejected.
 */
export async function exportAudit(nc: NatsConnection, instruments: Instruments, write: (line: string) => void, shards = 1): Promise<number> {
  let n = 0;
  // With engine shards (proto/shards.ts), one shard's journal after another; operator commands, which every shard journals, once.
  for (let shard = 0; shard < shards; shard++) n += await exportJournal(nc, instruments, write, shardNames(shard, shards).journalStream, shard > 0);
  return n;
}

async function exportJournal(nc: NatsConnection, instruments: Instruments, write: (line: string) => void, stream: string, teamsOnly: boolean): Promise<number> {
  const last = (await (await jetstreamManager(nc)).streams.info(stream)).state.last_seq;
  let n = 0;
  if (last === 0) return 0;
  // Compact conversions name their basket version: versions are defined by the journal's basket events before them.
  const catalog = new Catalog();
  catalog.bindConfig(instruments);
  let lastRequestId = 0;
  await replayJournal(
    nc,
    1,
    (events) => {
      for (const ev of events) {
        if ('requestId' in ev && ev.requestId !== undefined) lastRequestId = Math.max(lastRequestId, ev.requestId);
        if (ev.t === 'config_baskets') {
          // Not a decision: what version 0 of each basket is from here on (compact conversions name it).
          catalog.addConfig(ev.baskets, lastRequestId + 1);
          continue;
        }
        if (ev.t === 'account' && ev.requestId === undefined) continue; // roster accounts: no request
        if (teamsOnly && (ev.t === 'operator' || ev.t === 'basket' || ev.t === 'rules')) continue;
        if (ev.t === 'operator') {
          const entry: OperatorAuditEntry = { kind: ev.action, etf: ev.etf, ...(ev.reason !== undefined ? { reason: ev.reason } : {}), by: ev.by, ts: ev.ts };
          write(JSON.stringify(entry));
        } else if (ev.t === 'basket') {
          catalog.add(ev.etf, ev.version, ev.from, ev.components);
          const entry: OperatorAuditEntry = { kind: 'basket', etf: ev.etf, basket: { version: ev.version, from: ev.from, components: Object.fromEntries(ev.components.map(([s, w]) => [instruments.tickerOf(s), w])) }, by: ev.by, ts: ev.ts };
          write(JSON.stringify(entry));
        } else if (ev.t === 'rules') {
          const entry: OperatorAuditEntry = { kind: 'rules', etf: null, rules: ev.rules, by: ev.by, ts: ev.ts };
          write(JSON.stringify(entry));
        } else write(JSON.stringify(entryWords(auditEntry(ev, instruments, catalog), instruments.tickerOf)));
        n++;
      }
    },
    last,
    stream,
  );
  return n;
}
