import type { Delta, JournalEvent } from '../../proto/journal.js';
import type { Instruments } from '../config/baskets.js';
import type { Position } from '../../proto/engine.js';

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
  answers: Map<number, Position[]>;
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

/**
 * Every basket version by ETF and version number: version 0 from the config
 * (bound once), later ones as the journal's basket events arrive. Versions are
 * numbered 1, 2, ... per ETF and never change once journaled, so a compact
 * conversion record (etf, version, op, amount) determines its deltas.
 */
export class Catalog {
  /** etf → versions, index = version number. */
  private readonly byEtf = new Map<string, CompiledBasket[]>();
  /** The instruments version 0 came from (decide binds its config's once). */
  instruments: Instruments | undefined;

  bindConfig(instruments: Instruments): void {
    this.instruments = instruments;
    for (const b of instruments.baskets.values()) {
      const versions = this.byEtf.get(b.name) ?? [];
      versions[0] = compile(
        b.name,
        b.symbol,
        0,
        0,
        b.components.map((c) => [c.symbol, c.weight] as const),
      );
      // Versions added before the config was bound take the ETF's symbol now.
      for (const v of versions) if (v) {
        v.symbol = b.symbol;
        v.answers.clear();
      }
      this.byEtf.set(b.name, versions);
    }
  }

  /** Adds an operator's version (in journal order). */
  add(etf: string, version: number, from: number, components: readonly Delta[]): void {
    const versions = this.byEtf.get(etf) ?? [];
    versions[version] = compile(etf, versions[0]?.symbol ?? -1, version, from, components);
    this.byEtf.set(etf, versions);
  }

  get(etf: string, version: number): CompiledBasket | undefined {
    return this.byEtf.get(etf)?.[version];
  }

  /** The version in force at `now`: the latest whose `from` has come, else the config's (the rule of basketInForce). */
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
    const b = this.get(ev.etf, ev.basketVersion ?? 0);
    if (!b || b.symbol < 0) {
      throw new Error(`journal: conversion r${ev.requestId} used ${ev.etf} basket version ${ev.basketVersion ?? 0}, which this engine does not know (baskets file changed?)`);
    }
    return b;
  }

  /** A conversion's deltas, as a list (for edges: answers, notices, the scoreboard, the export). */
  deltas(ev: Conversion): Delta[] {
    if (ev.deltas) return ev.deltas;
    return basketDeltas(this.of(ev), ev.op, ev.amount);
  }
}

/** Deltas of converting `amount` units: create debits the basket and credits the ETF; redeem the reverse. */
export function basketDeltas(b: CompiledBasket, op: 'create' | 'redeem', amount: number): Delta[] {
  const sign = op === 'create' ? 1 : -1;
  const out: Delta[] = [];
  for (let i = 0; i < b.syms.length; i++) out.push([b.syms[i]!, -sign * b.weights[i]! * amount]);
  out.push([b.symbol, sign * amount]);
  return out;
}
