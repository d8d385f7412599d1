import type { NatsConnection } from '@nats-io/transport-node';
import type { DumpResult } from '../../proto/engine.js';
import type { JournalEvent } from '../../proto/journal.js';
import { shardNames, shardOfClient, type ShardNames } from '../../proto/shards.js';
import type { Instruments } from '../config/baskets.js';
import type { Logger } from '../shared/log.js';
import { applyEvent, requestIdString } from './core.js';
import { emptyState, flatPositions, positionList, type EngineState } from './state.js';
import { Catalog } from './catalog.js';
import { replayMerged } from './replay.js';
import { applyFillMessage, emptyFillStats } from './fill-feed.js';

export interface CheckReport {
  journalSeq: number;
  fillSeq: number;
  accounts: number;
  /**
   * Accounts whose live positions or cash differ from the rebuild, which puts
   * every journal event among the fills where the engine acknowledged it (its
   * recorded fill position; for records from before positions were recorded,
   * JetStream's storage times): a difference is an acknowledged operation
   * missing from, or extra in, the live holdings. `differences`: per ticker (and "cash").
   */
  mismatches: {
    client_id: number;
    username: string | null;
    live: [number, number][];
    rebuilt: [number, number][];
    live_cash: number;
    rebuilt_cash: number;
    differences: { ticker: string; live: number; acknowledged: number }[];
  }[];
  /** Accepted conversions whose answered positions (journaled with them) the rebuild does not reach at their place. */
  acknowledged: { client_id: number; request_id: string; journal_seq: number; fill_seq: number; answered: [number, number][]; rebuilt: [number, number][] }[];
  /** Symbols where conversions did not conserve units, weight for weight. */
  conservation: { symbol: number; ticker: string; expected: number; journaled: number }[];
  ok: boolean;
}

const pairs = (flat: readonly number[]): [number, number][] => {
  const out: [number, number][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
};

/**
 * Rebuilds state from the journal and the fill stream alone, up to the given
 * sequences, each journal event among the fills where the engine applied it
 * (src/engine/replay.ts; records without positions by JetStream's storage
 * times), checking each accepted conversion's answered positions on the way.
 */
export async function rebuild(
  nc: NatsConnection,
  journalSeq: number,
  fillSeq: number,
  log: Logger,
  instruments: Instruments,
  /** One engine shard's (proto/shards.ts): its journal, and its accounts' fills. */
  shard?: { names: ShardNames; owns: (clientId: number) => boolean },
): Promise<{ state: EngineState; events: JournalEvent[]; acknowledged: CheckReport['acknowledged'] }> {
  const state = emptyState(instruments);
  const events: JournalEvent[] = [];
  const acknowledged: CheckReport['acknowledged'] = [];
  const stats = emptyFillStats();
  const journalStream = shard?.names.journalStream ?? shardNames(0, 1).journalStream;
  await replayMerged(nc, {
    journalStream,
    fromJournalSeq: 1,
    untilJournalSeq: journalSeq,
    fromFillSeq: 1,
    untilFillSeq: fillSeq,
    unpositioned: 'stream-time',
    sink: {
      event: (ev, seq, at) => {
        applyEvent(state, ev);
        events.push(ev);
        // Where its place is recorded, the replay must reach the positions the engine answered with.
        if (at !== undefined && ev.t === 'conversion' && ev.held) {
          const rebuilt = flatPositions(state.accounts.get(ev.clientId)!);
          if (JSON.stringify(rebuilt) !== JSON.stringify(ev.held)) {
            acknowledged.push({ client_id: ev.clientId, request_id: requestIdString(ev.requestId), journal_seq: seq, fill_seq: at, answered: pairs(ev.held), rebuilt: pairs(rebuilt) });
          }
        }
      },
      batchDone: (seq) => (state.journalSeq = seq),
      fill: (m) => void applyFillMessage(state, m, stats, log, shard?.owns),
      fillSeq: () => state.fillSeq,
    },
  });
  return { state, events, acknowledged };
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
  const { state, events, acknowledged } = live.shards ? await rebuildShards(nc, live.shards, log, instruments) : await rebuild(nc, live.journal_seq, live.fill_seq, log, instruments);
  const mismatches: CheckReport['mismatches'] = [];
  const liveById = new Map(live.accounts.map((a) => [a.client_id, a]));
  for (const id of new Set([...liveById.keys(), ...state.accounts.keys()])) {
    const l = liveById.get(id);
    const acc = state.accounts.get(id);
    const r = acc ? positionList(acc) : [];
    const lp = l?.positions ?? [];
    // Cash too: every fill's quantity × price and every fee, the same live and rebuilt.
    if (JSON.stringify(lp) !== JSON.stringify(r) || (l?.cash ?? 0) !== (acc?.cash ?? 0)) {
      const liveQ = new Map(lp);
      const rebuiltQ = new Map(r);
      const differences: CheckReport['mismatches'][number]['differences'] = [];
      for (const symbol of [...new Set([...liveQ.keys(), ...rebuiltQ.keys()])].sort((a, b) => a - b)) {
        const a = liveQ.get(symbol) ?? 0;
        const b = rebuiltQ.get(symbol) ?? 0;
        if (a !== b) differences.push({ ticker: instruments.tickerOf(symbol), live: a, acknowledged: b });
      }
      if ((l?.cash ?? 0) !== (acc?.cash ?? 0)) differences.push({ ticker: 'cash', live: l?.cash ?? 0, acknowledged: acc?.cash ?? 0 });
      mismatches.push({ client_id: id, username: l?.username ?? acc?.username ?? null, live: lp, rebuilt: r, live_cash: l?.cash ?? 0, rebuilt_cash: acc?.cash ?? 0, differences });
    }
  }
  const cons = conservation(events, instruments);
  return {
    journalSeq: live.journal_seq,
    fillSeq: live.fill_seq,
    accounts: liveById.size,
    mismatches,
    acknowledged,
    conservation: cons,
    ok: mismatches.length === 0 && acknowledged.length === 0 && cons.length === 0,
  };
}

/** The report's findings, one line each, naming accounts and what differs. */
export function describeReport(report: CheckReport): string[] {
  const lines: string[] = [];
  for (const m of report.mismatches) {
    const who = m.username ? `${m.username} (client ${m.client_id})` : `client ${m.client_id}`;
    lines.push(`${who}: holdings differ from what was acknowledged: ${m.differences.map((d) => `${d.ticker} ${d.live} held, ${d.acknowledged} acknowledged`).join('; ')}`);
  }
  for (const a of report.acknowledged) {
    lines.push(`client ${a.client_id}: request ${a.request_id} (journal ${a.journal_seq}, after fill ${a.fill_seq}) answered positions ${JSON.stringify(a.answered)}, the journal and fills rebuild ${JSON.stringify(a.rebuilt)}`);
  }
  for (const c of report.conservation) lines.push(`${c.ticker}: conversions moved ${c.journaled} units where their baskets say ${c.expected}`);
  return lines;
}

/** Every shard rebuilt from its own journal and its accounts' fills, at the sequences its dump named, as one state. */
async function rebuildShards(
  nc: NatsConnection,
  shards: NonNullable<DumpResult['shards']>,
  log: Logger,
  instruments: Instruments,
): Promise<{ state: EngineState; events: JournalEvent[]; acknowledged: CheckReport['acknowledged'] }> {
  const state = emptyState(instruments);
  const events: JournalEvent[] = [];
  const acknowledged: CheckReport['acknowledged'] = [];
  for (const s of shards) {
    const names = shardNames(s.shard, shards.length);
    const part = await rebuild(nc, s.journal_seq, s.fill_seq, log, instruments, { names, owns: (id) => shardOfClient(id, shards.length) === s.shard });
    for (const [id, acc] of part.state.accounts) state.accounts.set(id, acc);
    events.push(...part.events);
    acknowledged.push(...part.acknowledged);
  }
  return { state, events, acknowledged };
}
