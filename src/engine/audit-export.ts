import type { NatsConnection } from '@nats-io/transport-node';
import { shardNames } from '../../proto/shards.js';
import type { Instruments } from '../config/baskets.js';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { replayJournal } from './journal.js';
import { auditEntry } from './core.js';
import { Catalog } from './catalog.js';
import { entryWords } from '../../proto/messages.js';
import type { AuditEntry, OperatorAuditEntry, PnlSplitEntry } from '../../proto/audit.js';
import type { Scorecard } from '../../proto/http.js';
import { DESK_STREAM, FILL_STREAM, SESSION_SUBJECT } from '../../proto/subjects.js';
import { decode } from '../../proto/codec.js';
import type { SessionMarker } from '../../proto/fill.js';
import { DeskHistory } from '../shared/desk-history.js';
import { readStream } from '../shared/stream-reader.js';
import { isStreamNotFound } from '../shared/js-errors.js';

/** A team's tally over the journal, for its P&L split: its conversions of the split's exchange session. */
interface Tally {
  username: string | null;
  conversions: number;
  unscored: number;
  fees: number;
  edge: number;
  legs: number;
  legsWeight: number;
}

/**
 * The whole audit trail, oldest first, as NDJSON lines of AuditEntry
 * (proto/audit.ts), read from the journal: every registration, creation and
 * redemption, accepted or rejected. For grading, an accepted conversion also
 * carries the scorecard the desk stream holds for it, and after the entries
 * comes each team's P&L split (PnlSplitEntry). Returns the audit entries written.
 */
export async function exportAudit(nc: NatsConnection, instruments: Instruments, write: (line: string) => void, shards = 1): Promise<number> {
  let n = 0;
  const desk = await readDesk(nc);
  const reset = (await readResets(nc)).at(-1);
  const tallies = new Map<number, Tally>();
  // With engine shards (proto/shards.ts), one shard's journal after another; operator commands, which every shard journals, written once (from shard 0's).
  for (let shard = 0; shard < shards; shard++) n += await exportJournal(nc, instruments, write, shardNames(shard, shards).journalStream, shard > 0, desk, tallies, reset);
  for (const line of pnlSplits(desk, tallies, reset)) write(JSON.stringify(line));
  return n;
}

/** An exchange session reset in the fill stream: it zeroed every account, cash too (core.ts applySessionReset). */
interface Reset {
  /** Its fill-stream sequence, and when JetStream stored it. */
  seq: number;
  ns: bigint;
}

/**
 * The fill stream's reset markers, in order (markers without `reset` change
 * nothing). Read through a consumer of the marker subject alone: the fills
 * around them may be millions.
 */
async function readResets(nc: NatsConnection): Promise<Reset[]> {
  const jsm = await jetstreamManager(nc);
  let markers: number;
  try {
    markers = (await jsm.streams.info(FILL_STREAM, { subjects_filter: SESSION_SUBJECT })).state.subjects?.[SESSION_SUBJECT] ?? 0;
  } catch (err) {
    if (isStreamNotFound(err)) return [];
    throw err;
  }
  const resets: Reset[] = [];
  if (markers === 0) return resets;
  // One subject as a string: the client asks for `filter_subject`, which servers before 2.10 (Debian's 2.9) take.
  const consumer = await jetstream(nc).consumers.get(FILL_STREAM, { filter_subjects: SESSION_SUBJECT });
  try {
    for (let i = 0; i < markers; i++) {
      const m = await consumer.next({ expires: 5000 });
      if (!m) throw new Error(`the fill stream holds ${markers} session markers, but only ${i} were delivered`);
      // A reset whenever the engine takes it for one (fill-feed.ts): `reset` true, whatever else the marker says.
      if (markerOf(m.data)?.reset === true) resets.push({ seq: m.seq, ns: m.timestampNanos });
    }
  } finally {
    await consumer.delete().catch(() => {});
  }
  return resets;
}

function markerOf(data: Uint8Array): Partial<SessionMarker> | undefined {
  try {
    return decode<Partial<SessionMarker> | undefined>(data);
  } catch {
    return undefined;
  }
}

/** The desk's scorecards and newest sample (src/pricing/desk.ts); an empty one where the system has no desk stream (older, or the pricing service never ran). */
async function readDesk(nc: NatsConnection): Promise<DeskHistory> {
  const desk = new DeskHistory(Infinity);
  try {
    const reader = await readStream(nc, DESK_STREAM, 1, (m) => desk.apply(m.subject, m.data), { follow: false });
    await reader.caughtUp;
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
  }
  return desk;
}

/**
 * Each team's P&L at the desk's newest sample, split into what its
 * conversions earned at the marks of their moments (their scorecards' edge)
 * and the rest: teams the desk charted, and teams that converted. An exchange
 * reset starts every team's P&L from 0, so the split covers the session since
 * the last reset only: earlier conversions earned P&L that the reset took
 * away. A sample from before it marks another session: no P&L then.
 */
function pnlSplits(desk: DeskHistory, tallies: Map<number, Tally>, reset: Reset | undefined): PnlSplitEntry[] {
  const since = reset ? Number(reset.ns / 1_000_000n) : null;
  // The teams it charted are listed all the same, with their names.
  const current = desk.last !== null && (since === null || desk.last.ts >= since);
  const charted = new Map((desk.last?.teams ?? []).map(([id, username, pnl]) => [id, { username, pnl }]));
  const ids = [...new Set([...charted.keys(), ...tallies.keys()])].sort((a, b) => a - b);
  return ids.map((id) => {
    const t = tallies.get(id);
    const c = charted.get(id);
    const m = current ? c : undefined;
    const edge = t?.edge ?? 0;
    return {
      kind: 'pnl_split',
      client_id: id,
      username: c?.username ?? t?.username ?? null,
      pnl: m ? m.pnl : null,
      conversion_edge: edge,
      other: m ? m.pnl - edge : null,
      conversions: t?.conversions ?? 0,
      unscored: t?.unscored ?? 0,
      fees: t?.fees ?? 0,
      legs_sold: t && t.legsWeight > 0 ? t.legs / t.legsWeight : null,
      ts: m ? desk.last!.ts : null,
      since,
    };
  });
}

const newTally = (): Tally => ({ username: null, conversions: 0, unscored: 0, fees: 0, edge: 0, legs: 0, legsWeight: 0 });

async function exportJournal(
  nc: NatsConnection,
  instruments: Instruments,
  write: (line: string) => void,
  stream: string,
  teamsOnly: boolean,
  desk: DeskHistory,
  tallies: Map<number, Tally>,
  /** The last exchange reset: the tallies count what was decided after it. */
  reset: Reset | undefined,
): Promise<number> {
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
    (events, _seq, batch, storedNs) => {
      // Where the engine stood in the fill stream as it applied each event (proto/journal.ts `fills`): after the last
      // reset or not. A record without positions (versions 1, 2): by when each was stored, as the check estimates it.
      const fills = batch.fills ?? [];
      let pair = 0;
      for (const [i, ev] of events.entries()) {
        while (pair + 2 < fills.length && fills[pair + 2]! <= i) pair += 2;
        const current = !reset || (fills.length > 0 ? fills[pair + 1]! >= reset.seq : storedNs >= reset.ns);
        if ('requestId' in ev && ev.requestId !== undefined) lastRequestId = Math.max(lastRequestId, ev.requestId);
        if (ev.t === 'config_baskets') {
          // Not a decision: what version 0 of each basket is from here on (compact conversions name it).
          catalog.addConfig(ev.baskets, lastRequestId + 1);
          continue;
        }
        if (ev.t === 'account' && ev.requestId === undefined) continue; // roster accounts: no request
        if (ev.t === 'name') continue; // a roster account's username, reserved for it by another shard: no request either
        // Every shard's own conversions name the versions its own journal defines, so its catalog learns them even where another shard writes the line.
        if (ev.t === 'basket') catalog.add(ev.etf, ev.version, ev.from, ev.components);
        if (teamsOnly && (ev.t === 'operator' || ev.t === 'basket' || ev.t === 'rules')) continue;
        if (ev.t === 'operator') {
          const entry: OperatorAuditEntry = { kind: ev.action, etf: ev.etf, ...(ev.reason !== undefined ? { reason: ev.reason } : {}), by: ev.by, ts: ev.ts };
          write(JSON.stringify(entry));
        } else if (ev.t === 'basket') {
          const entry: OperatorAuditEntry = { kind: 'basket', etf: ev.etf, basket: { version: ev.version, from: ev.from, components: Object.fromEntries(ev.components.map(([s, w]) => [instruments.tickerOf(s), w])) }, by: ev.by, ts: ev.ts };
          write(JSON.stringify(entry));
        } else if (ev.t === 'rules') {
          const entry: OperatorAuditEntry = { kind: 'rules', etf: null, rules: ev.rules, by: ev.by, ts: ev.ts };
          write(JSON.stringify(entry));
        } else write(JSON.stringify(scored(entryWords(auditEntry(ev, instruments, catalog), instruments.tickerOf), desk, tallies, current)));
        n++;
      }
    },
    last,
    stream,
  );
  return n;
}

/**
 * An audit entry with its scorecard, if the desk scored it (the shape GET /history gives it), counted in its team's
 * tally when `current` (decided in the split's exchange session).
 */
function scored<E extends AuditEntry<unknown>>(e: E, desk: DeskHistory, tallies: Map<number, Tally>, current: boolean): E & { scorecard?: Scorecard } {
  if (e.client_id === null || e.status !== 'accepted') return e;
  const t = tallies.get(e.client_id) ?? newTally();
  tallies.set(e.client_id, t);
  if (e.kind === 'register') {
    t.username = e.username ?? t.username;
    return e;
  }
  const card = desk.scorecard(e.client_id, e.request_id);
  const entry = card ? { ...e, scorecard: card } : e;
  if (!current) return entry;
  t.conversions++;
  t.fees += e.fee ?? 0;
  if (!card || card.edge === null) {
    t.unscored++;
    return entry;
  }
  t.edge += card.edge;
  t.legs += card.legs_sold * card.amount;
  t.legsWeight += card.amount;
  return entry;
}
