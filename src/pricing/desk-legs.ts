import { DESK_LEGS_VERSION, type DeskLegs } from '../../proto/desk.js';
import { CHART_LIMITS, type Scorecard } from '../../proto/http.js';

/** One conversion whose legs are not all sold yet. */
interface Open {
  requestId: string;
  /** Null while a restarted writer has the team's record but has not read the card yet (it is read, or made, as the journal is taken up). */
  card: Scorecard | null;
  /** The fill-stream sequence the engine stood at as it decided the conversion: only later sells are its legs. */
  at: number;
  needed: number;
  left: Map<number, number>;
}

interface Team {
  open: Open[];
  /** How far into its shard's journal and the fill stream the team's stored record had taken in when this writer started (0: none). */
  journal: number;
  fills: number;
}

export const legsKey = (clientId: number, requestId: string): string => `${clientId}/${requestId}`;

/**
 * Which of each team's conversions' legs are still unsold, and how much of
 * each: what the desk's `legs_sold` is (proto/http.ts Scorecard), from the
 * engine's streams alone. A conversion is taken in from the journal, with the
 * fill-stream position the engine decided it at; a sell from the fill stream
 * counts against the team's oldest conversions decided before it. So the
 * answer does not depend on which of the two streams the writer reads first,
 * and a writer that restarts, or missed notices, reads both on from where it
 * stood and comes to the same cards.
 */
export class LegBook {
  private readonly teams = new Map<number, Team>();
  /** The last exchange reset's fill-stream sequence: conversions decided before it lost their legs with it. */
  resetAt = 0;

  /**
   * A team's record as a restarted writer reads it; `cardOf` finds each
   * conversion's card among those stored. Returns the cards whose stored
   * legs_sold is not the record's (the writer stopped between the two writes).
   */
  load(rec: DeskLegs, cardOf: (key: string) => Scorecard | undefined): Scorecard[] {
    const behind: Scorecard[] = [];
    const open = rec.open.map((o): Open => {
      const left = new Map<number, number>();
      for (let i = 0; i < o.left.length; i += 2) if (o.left[i + 1]! > 0) left.set(o.left[i]!, o.left[i + 1]!);
      const entry: Open = { requestId: o.request_id, card: cardOf(legsKey(rec.client_id, o.request_id)) ?? null, at: o.at, needed: o.needed, left };
      if (entry.card && entry.card.legs_sold !== soldOf(entry)) {
        entry.card.legs_sold = soldOf(entry);
        behind.push(entry.card);
      }
      return entry;
    });
    this.teams.set(rec.client_id, { open: open.filter((o) => o.left.size > 0), journal: rec.journal, fills: rec.fills });
    return behind;
  }

  /** Whether the team's stored record already took in this journal record (a restarted writer reads on from an older cursor). */
  tookJournal(clientId: number, seq: number): boolean {
    return seq <= (this.teams.get(clientId)?.journal ?? 0);
  }

  private tookFill(clientId: number, seq: number): boolean {
    return seq <= (this.teams.get(clientId)?.fills ?? 0);
  }

  private team(clientId: number): Team {
    let t = this.teams.get(clientId);
    if (!t) {
      t = { open: [], journal: 0, fills: 0 };
      this.teams.set(clientId, t);
    }
    return t;
  }

  /** The card of a conversion whose legs are followed. */
  cardOf(clientId: number, requestId: string): Scorecard | undefined {
    return this.teams.get(clientId)?.open.find((o) => o.requestId === requestId)?.card ?? undefined;
  }

  holds(clientId: number, requestId: string): boolean {
    return this.teams.get(clientId)?.open.some((o) => o.requestId === requestId) ?? false;
  }

  /** The card for a conversion a restarted writer's record holds without one. */
  attach(clientId: number, requestId: string, card: Scorecard): void {
    const o = this.teams.get(clientId)?.open.find((x) => x.requestId === requestId);
    if (o && !o.card) {
      o.card = card;
      card.legs_sold = soldOf(o);
    }
  }

  /**
   * A conversion decided at fill-stream position `at` gave the team `gave`
   * (symbol → quantity). Returns the request id of the team's oldest
   * conversion let go to make room (CHART_LIMITS.openLegs), if one was.
   */
  open(clientId: number, requestId: string, card: Scorecard, at: number, gave: Map<number, number>): { opened: boolean; letGo?: string } {
    const needed = [...gave.values()].reduce((a, b) => a + b, 0);
    // Decided before the last reset: what it gave went with it.
    if (needed <= 0 || at < this.resetAt) return { opened: false };
    const t = this.team(clientId);
    t.open.push({ requestId, card, at, needed, left: new Map(gave) });
    const gone = t.open.length > CHART_LIMITS.openLegs ? t.open.shift() : undefined;
    return { opened: true, ...(gone ? { letGo: gone.requestId } : {}) };
  }

  /**
   * A sell of the team's, at fill-stream sequence `seq`: counted against its
   * oldest conversions decided before it that gave it the symbol. Returns the
   * cards that moved and the request ids of conversions now all sold; null
   * when the team's record had already counted it.
   */
  sell(clientId: number, seq: number, symbol: number, quantity: number): { moved: Scorecard[]; done: string[] } | null {
    const t = this.teams.get(clientId);
    if (!t || t.open.length === 0 || this.tookFill(clientId, seq)) return null;
    const moved: Scorecard[] = [];
    const done: string[] = [];
    let sold = quantity;
    for (const o of t.open) {
      if (sold <= 0) break;
      if (o.at >= seq) continue;
      const want = o.left.get(symbol);
      if (!want) continue;
      const take = Math.min(want, sold);
      sold -= take;
      if (want === take) o.left.delete(symbol);
      else o.left.set(symbol, want - take);
      if (o.card) {
        o.card.legs_sold = soldOf(o);
        moved.push(o.card);
      }
      if (o.left.size === 0) done.push(o.requestId);
    }
    if (done.length) t.open = t.open.filter((o) => o.left.size > 0);
    return { moved, done };
  }

  /** An exchange reset at fill-stream sequence `seq`: every conversion decided before it lost its legs. Returns each team changed, with the request ids let go. */
  reset(seq: number): Map<number, string[]> {
    this.resetAt = Math.max(this.resetAt, seq);
    const changed = new Map<number, string[]>();
    for (const [clientId, t] of this.teams) {
      if (this.tookFill(clientId, seq)) continue;
      const gone = t.open.filter((o) => o.at < seq);
      if (gone.length === 0) continue;
      t.open = t.open.filter((o) => o.at >= seq);
      changed.set(
        clientId,
        gone.map((o) => o.requestId),
      );
    }
    return changed;
  }

  /**
   * Conversions a restarted writer's records hold whose card it never found
   * (the stream no longer has it): let go, as there is nothing to write their
   * legs into. Returns how many.
   */
  dropCardless(): { clientId: number; requestId: string }[] {
    const dropped: { clientId: number; requestId: string }[] = [];
    for (const [clientId, t] of this.teams) {
      for (const o of t.open) if (!o.card) dropped.push({ clientId, requestId: o.requestId });
      t.open = t.open.filter((o) => o.card);
    }
    return dropped;
  }

  /** The team's record as it stands, taken in up to `journal` and `fills`. */
  record(clientId: number, journal: number, fills: number): DeskLegs {
    const open = (this.teams.get(clientId)?.open ?? []).map((o) => ({ request_id: o.requestId, at: o.at, needed: o.needed, left: [...o.left].flat() }));
    return { v: DESK_LEGS_VERSION, client_id: clientId, journal, fills, open };
  }

  /** Teams with conversions whose legs are followed. */
  teamsOpen(): number[] {
    return [...this.teams].filter(([, t]) => t.open.length > 0).map(([id]) => id);
  }
}

const soldOf = (o: Open): number => 1 - [...o.left.values()].reduce((a, b) => a + b, 0) / o.needed;
