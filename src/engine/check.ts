import type { NatsConnection } from '@nats-io/transport-node';
import type { DumpResult } from '../../proto/engine.js';
import type { JournalEvent } from '../../proto/journal.js';
import { FILL_STREAM } from '../../proto/subjects.js';
import { shardNames, shardOfClient, type ShardNames } from '../../proto/shards.js';
import type { Instruments } from '../config/baskets.js';
import { readStream } from '../shared/stream-reader.js';
import type { Logger } from '../shared/log.js';
import { applyEvent } from './core.js';
import { emptyState, positionList, type EngineState } from './state.js';
import { Catalog } from './catalog.js';
import { replayJournal } from './journal.js';
import { applyFillMessage, emptyFillStats } from './fill-feed.js';

export interface CheckReport {
  journalSeq: number;
  fillSeq: number;
  accounts: number;
  /** Accounts whose live positions or cash differ from the rebuild. */
  mismatches: { client_id: number; live: [number, number][]; rebuilt: [number, number][]; live_cash: number; rebuilt_cash: number }[];
  /** Symbols where conversions did not conserve units, weight for weight. */
  conservation: { symbol: number; ticker: string; expected: number; journaled: number }[];
  ok: boolean;
}

/** Rebuilds state from the journal and the fill stream alone, up to the given sequences. */
export async function rebuild(
  nc: NatsConnection,
  journalSeq: number,
  fillSeq: number,
  log: Logger,
  instruments: Instruments,
  /** One engine shard's (proto/shards.ts): its journal, and its accounts' fills. */
  shard?: { names: ShardNames; owns: (clientId: number) => boolean },
): Promise<{ state: EngineState; events: JournalEvent[] }> {
  const state = emptyState(instruments);
  const events: JournalEvent[] = [];
  if (journalSeq > 0) {
    await replayJournal(
      nc,
      1,
      (batch) => {
        for (const ev of batch) {
          applyEvent(state, ev);
          events.push(ev);
        }
      },
      journalSeq,
      shard?.names.journalStream,
    );
  }
  if (fillSeq > 0) {
    const stats = emptyFillStats();
    const reader = await readStream(nc, FILL_STREAM, 1, (m) => void applyFillMessage(state, m, stats, log, shard?.owns), { follow: false, untilSeq: fillSeq });
    await reader.caughtUp;
    await reader.stop();
  }
  return { state, events };
}

/**
 * Conservation of conversions: per symbol, what creations debited minus what
 * redemptions credited must equal, weight for weight, the ETF units those
 * conversions left outstanding; and each ETF's own units likewise. Version-1
 * records spell their deltas out, so this checks them; version-2 records
 * derive theirs from the basket version (see proto/journal.ts), so for them it
 * holds by construction and checks that every version they name exists.
 */
export function conservation(events: JournalEvent[], instruments: Instruments): CheckReport['conservation'] {
  // Basket versions as the journal defines them, in journal order (version 0: the baskets file's as journaled, else the file).
  const catalog = new Catalog();
  catalog.bindConfig(instruments);
  let lastRequestId = 0;
  const journaled = new Map<number, number>();
  const expected = new Map<number, number>();
  const add = (m: Map<number, number>, symbol: number, d: number) => m.set(symbol, (m.get(symbol) ?? 0) + d);
  for (const ev of events) {
    if ('requestId' in ev && ev.requestId !== undefined) lastRequestId = Math.max(lastRequestId, ev.requestId);
    if (ev.t === 'basket') catalog.add(ev.etf, ev.version, ev.from, ev.components);
    if (ev.t === 'config_baskets') catalog.addConfig(ev.baskets, lastRequestId + 1);
    if (ev.t !== 'conversion') continue;
    for (const [symbol, d] of catalog.deltas(ev)) add(journaled, symbol, d);
    // Each conversion conserves units by the basket version it used.
    const basket = catalog.get(ev.etf, ev.basketVersion ?? 0, ev.requestId);
    if (!basket) continue;
    const units = ev.op === 'create' ? ev.amount : -ev.amount;
    add(expected, basket.symbol, units);
    for (let i = 0; i < basket.syms.length; i++) add(expected, basket.syms[i]!, -basket.weights[i]! * units);
  }
  const problems: CheckReport['conservation'] = [];
  for (const symbol of new Set([...expected.keys(), ...journaled.keys()])) {
    const e = expected.get(symbol) ?? 0;
    const j = journaled.get(symbol) ?? 0;
    if (e !== j) problems.push({ symbol, ticker: instruments.tickerOf(symbol), expected: e, journaled: j });
  }
  return problems;
}

/** Compares the live engine's state (a dump) with a rebuild from the journal and fill stream at the same sequences. */
export async function consistencyCheck(nc: NatsConnection, live: DumpResult, instruments: Instruments, log: Logger): Promise<CheckReport> {
  const { state, events } = live.shards ? await rebuildShards(nc, live.shards, log, instruments) : await rebuild(nc, live.journal_seq, live.fill_seq, log, instruments);
  const mismatches: CheckReport['mismatches'] = [];
  const liveById = new Map(live.accounts.map((a) => [a.client_id, a]));
  for (const id of new Set([...liveById.keys(), ...state.accounts.keys()])) {
    const l = liveById.get(id);
    const acc = state.accounts.get(id);
    const r = acc ? positionList(acc) : [];
    // Cash too: every fill's quantity × price and every fee, the same live and rebuilt.
    if (JSON.stringify(l?.positions ?? []) !== JSON.stringify(r) || (l?.cash ?? 0) !== (acc?.cash ?? 0)) {
      mismatches.push({ client_id: id, live: l?.positions ?? [], rebuilt: r, live_cash: l?.cash ?? 0, rebuilt_cash: acc?.cash ?? 0 });
    }
  }
  const cons = conservation(events, instruments);
  return { journalSeq: live.journal_seq, fillSeq: live.fill_seq, accounts: liveById.size, mismatches, conservation: cons, ok: mismatches.length === 0 && cons.length === 0 };
}

/** Every shard rebuilt from its own journal and its accounts' fills, at the sequences its dump named, as one state. */
async function rebuildShards(nc: NatsConnection, shards: NonNullable<DumpResult['shards']>, log: Logger, instruments: Instruments): Promise<{ state: EngineState; events: JournalEvent[] }> {
  const state = emptyState(instruments);
  const events: JournalEvent[] = [];
  for (const s of shards) {
    const names = shardNames(s.shard, shards.length);
    const part = await rebuild(nc, s.journal_seq, s.fill_seq, log, instruments, { names, owns: (id) => shardOfClient(id, shards.length) === s.shard });
    for (const [id, acc] of part.state.accounts) state.accounts.set(id, acc);
    events.push(...part.events);
  }
  return { state, events };
}
