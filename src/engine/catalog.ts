import type { Delta, JournalEvent } from '../../proto/journal.js';
import type { Instruments } from '../config/baskets.js';
import type { FlatPositions } from '../../proto/engine.js';

/**
 * One basket version compiled once into typed arrays, so checking and applying
 * a conversion walks two arrays in place instead of building delta lists.
 */
export interface CompiledBasket {
  etf: string;
  /** The symbol id the ETF's own units are held under. */
  symbol: number;
  /** 0: the config's basket; 1, 2, ...: the operator's. */
  version: number;
  /** Applies to conversions from this time (ms); 0 for the config's. */
  from: number;
  syms: Int32Array;
  weights: Float64Array;
  /** Answers' delta lists by signed amount (see answerDeltas in core.ts): derived, bounded. */
  answers: Map<number, FlatPositions>;
}

type Conversion = Extract<JournalEvent, { t: 'conversion' }>;

function compile(etf: string, symbol: number, version: number, from: number, components: readonly (readonly [number, number])[]): CompiledBasket {
  const syms = new Int32Array(components.length);
  const weights = new Float64Array(components.length);
  components.forEach(([s, w], i) => {
    syms[i] = s;
    weights[i] = w;
  });
  return { etf, symbol, version, from, syms, weights, answers: new Map() };
}

/** The baskets file's baskets as a journal event carries them. */
export type ConfigBaskets = Extract<JournalEvent, { t: 'config_baskets' }>['baskets'];

export function configBaskets(instruments: Instruments): ConfigBaskets {
  return [...instruments.baskets.values()].map((b) => ({ etf: b.name, symbol: b.symbol, components: b.components.map((c): Delta => [c.symbol, c.weight]) }));
}

const sameBasket = (a: CompiledBasket, b: ConfigBaskets[number]): boolean =>
  a.symbol === b.symbol && a.syms.length === b.components.length && b.components.every(([s, w], i) => a.syms[i] === s && a.weights[i] === w);

/**
 * Every basket version by ETF and version number. Versions 1, 2, ... come
 * from the journal's basket events and never change once journaled. Version 0
 * is the baskets file's: the engine journals it (config_baskets) at start
 * whenever it differs from the last journaled one, and a conversion with
 * version 0 used the one journaled last before its request id. So a compact
 * conversion record (etf, version, op, amount) determines its deltas even
 * after the file is edited. Without a journaled one (a state built in tests,
 * or before the first start journals it), version 0 is the bound config's.
 */
export class Catalog {
  /** etf → versions, index = version number; [0] is the version 0 in force now. */
  private readonly byEtf = new Map<string, CompiledBasket[]>();
  /** Version 0 as journaled, per ETF, oldest first, each with the first request id it applies to. */
  private readonly journaled0 = new Map<string, { from: number; basket: CompiledBasket }[]>();
  private readonly bound0 = new Map<string, CompiledBasket>();
  /** The instruments bound (decide binds its config's once). */
  instruments: Instruments | undefined;

  bindConfig(instruments: Instruments): void {
    this.instruments = instruments;
    this.bound0.clear();
    for (const b of configBaskets(instruments)) {
      const compiled = compile(b.etf, b.symbol, 0, 0, b.components);
      this.bound0.set(b.etf, compiled);
      if (!this.journaled0.has(b.etf)) this.setVersion0(b.etf, compiled);
    }
  }

  /** The baskets file's baskets journaled, applying to requests from `fromRequestId` on (in journal order). */
  addConfig(baskets: ConfigBaskets, fromRequestId: number): void {
    for (const b of baskets) {
      const compiled = compile(b.etf, b.symbol, 0, 0, b.components);
      const list = this.journaled0.get(b.etf) ?? [];
      list.push({ from: fromRequestId, basket: compiled });
      this.journaled0.set(b.etf, list);
      this.setVersion0(b.etf, compiled);
    }
  }

  /** Whether these baskets differ from the last journaled (or none is): the engine then journals them. */
  configChanged(baskets: ConfigBaskets): boolean {
    return baskets.some((b) => {
      const list = this.journaled0.get(b.etf);
      return !list || !sameBasket(list[list.length - 1]!.basket, b);
    });
  }

  private setVersion0(etf: string, compiled: CompiledBasket): void {
    const versions = this.byEtf.get(etf) ?? [];
    versions[0] = compiled;
    // Operator versions take the ETF's symbol from its configured basket.
    for (const v of versions) {
      if (v && v.symbol !== compiled.symbol) {
        v.symbol = compiled.symbol;
        v.answers.clear();
      }
    }
    this.byEtf.set(etf, versions);
  }

  /** Adds an operator's version (in journal order). */
  add(etf: string, version: number, from: number, components: readonly Delta[]): void {
    const versions = this.byEtf.get(etf) ?? [];
    versions[version] = compile(etf, versions[0]?.symbol ?? -1, version, from, components);
    this.byEtf.set(etf, versions);
  }

  /** A version; for version 0, the one in force for request `requestId` (absent: now). */
  get(etf: string, version: number, requestId?: number): CompiledBasket | undefined {
    if (version !== 0 || requestId === undefined) return this.byEtf.get(etf)?.[version];
    const list = this.journaled0.get(etf);
    if (list) for (let i = list.length - 1; i >= 0; i--) if (list[i]!.from <= requestId) return list[i]!.basket;
    return this.bound0.get(etf) ?? list?.[0]?.basket;
  }

  /** The version in force at `now`: the latest whose `from` has come, else version 0 (the rule of basketInForce). */
  inForce(etf: string, now: number): CompiledBasket | undefined {
    const versions = this.byEtf.get(etf);
    if (!versions) return undefined;
    for (let i = versions.length - 1; i > 0; i--) {
      const v = versions[i];
      if (v && v.from <= now) return v;
    }
    return versions[0];
  }

  /** The basket a compact conversion record used, or a clear error: replay must never guess. */
  of(ev: Pick<Conversion, 'etf' | 'basketVersion' | 'requestId'>): CompiledBasket {
    const b = this.get(ev.etf, ev.basketVersion ?? 0, ev.requestId);
    if (!b || b.symbol < 0) {
      throw new Error(`journal: conversion r${ev.requestId} used ${ev.etf} basket version ${ev.basketVersion ?? 0}, which neither the journal nor the baskets file defines`);
    }
    return b;
  }

  /** A conversion's deltas, as a list (for edges: answers, notices, the scoreboard, the export). */
  deltas(ev: Conversion): Delta[] {
    if (ev.deltas) return ev.deltas;
    return basketDeltas(this.of(ev), ev.op, ev.amount);
  }

  /** A conversion's deltas as answers and notices carry them (flat; shared, frozen). */
  flatDeltas(ev: Conversion): FlatPositions {
    if (ev.deltas) return ev.deltas.flat();
    return answerDeltas(this.of(ev), ev.op === 'create' ? ev.amount : -ev.amount);
  }
}

/** Distinct amounts whose delta lists each basket version keeps for answers. */
const ANSWER_DELTAS_KEPT = 64;

/**
 * A conversion's deltas as answers list them. They depend only on the basket
 * version and the signed amount, so the lists of recent amounts are kept,
 * frozen, and shared by every answer that names them (answers are encoded,
 * never changed).
 */
export function answerDeltas(basket: CompiledBasket, units: number): FlatPositions {
  const kept = basket.answers.get(units);
  if (kept) return kept;
  const deltas: number[] = [];
  for (let i = 0; i < basket.syms.length; i++) deltas.push(basket.syms[i]!, -basket.weights[i]! * units);
  deltas.push(basket.symbol, units);
  if (basket.answers.size >= ANSWER_DELTAS_KEPT) basket.answers.clear();
  const frozen = Object.freeze(deltas);
  basket.answers.set(units, frozen);
  return frozen;
}

/** Deltas of converting `amount` units: create debits the basket and credits the ETF; redeem the reverse. */
export function basketDeltas(b: CompiledBasket, op: 'create' | 'redeem', amount: number): Delta[] {
  const sign = op === 'create' ? 1 : -1;
  const out: Delta[] = [];
  for (let i = 0; i < b.syms.length; i++) out.push([b.syms[i]!, -sign * b.weights[i]! * amount]);
  out.push([b.symbol, sign * amount]);
  return out;
}
