import type { ConversionAnswer, TickerOf } from '../../proto/engine.js';

/** What a symbol adds to an answer: its element of `positions` up to the quantity, and its key in `holdings` and `deltas`. */
interface Fragments {
  element: string;
  key: string;
}

/** Symbols given fragments at most (NDFEX's symbols are a few dozen); past it answers take the general path. */
const MAX_SYMBOLS = 4096;

const num = (n: number): string => (Number.isFinite(n) ? `${n}` : 'null');

/**
 * A conversion's answer (proto/http.ts ConversionBody) written as JSON text
 * straight from the engine's flat lists, with each symbol's fragments made
 * once: no named positions, maps by ticker or merged object per request
 * (building and serializing them was a tenth of the gateway's CPU per
 * `/create`, issue 24). The text is exactly what JSON.stringify makes of the
 * general path's object (test/answer-json.test.ts). `conversion` returns null
 * for an answer it cannot write so, and the caller takes the general path: a
 * ticker made of digits (an object puts such keys first) or `__proto__`, two
 * symbols of one ticker, a field not of its type, or warnings to word.
 */
export class ConversionAnswerWriter {
  /** null: the symbol's answers take the general path. */
  private readonly bySymbol = new Map<number, Fragments | null>();
  private readonly symbolOfTicker = new Map<string, number>();

  constructor(private readonly tickerOf: TickerOf) {}

  conversion(r: ConversionAnswer, clientRequestId: boolean): string | null {
    const h = r.holdings;
    if (r.beyond_limit || typeof h?.client_id !== 'number' || typeof h.username !== 'string' || typeof h.seq !== 'number' || typeof h.cash !== 'number') return null;
    if (typeof r.request_id !== 'string' || typeof r.op !== 'string' || typeof r.etf !== 'string' || typeof r.amount !== 'number' || typeof r.fee !== 'number' || typeof r.basket_version !== 'number') return null;
    const positions = this.lists(h.positions, true);
    const deltas = positions && this.lists(r.deltas, false);
    if (!positions || !deltas) return null;
    let text = `{"client_id":${num(h.client_id)},"username":${JSON.stringify(h.username)},"seq":${num(h.seq)},"holdings":{${positions[0]}},"positions":[${positions[1]}],"cash":${num(h.cash)}`;
    text += `,"request_id":${JSON.stringify(r.request_id)},"op":${JSON.stringify(r.op)},"etf_name":${JSON.stringify(r.etf)},"amount":${num(r.amount)},"deltas":{${deltas[0]}},"fee":${num(r.fee)},"basket_version":${num(r.basket_version)}`;
    if (clientRequestId && typeof r.client_request_id === 'string') text += `,"client_request_id":${JSON.stringify(r.client_request_id)}`;
    else if (clientRequestId && r.client_request_id !== undefined) return null;
    if (r.replayed) text += ',"replayed":true';
    if (r.dry_run) text += ',"dry_run":true';
    return `${text}}`;
  }

  /** A flat list as `"T":q,...` (a map by ticker) and, with `elements`, as `{"symbol":s,"ticker":"T","quantity":q},...`. */
  private lists(flat: readonly number[], elements: boolean): [string, string] | null {
    if (!Array.isArray(flat) || flat.length % 2 !== 0) return null;
    let keys = '';
    let items = '';
    for (let i = 0; i < flat.length; i += 2) {
      const symbol = flat[i]!;
      const q = flat[i + 1]!;
      if (typeof q !== 'number') return null;
      const f = this.fragments(symbol);
      if (!f) return null;
      const sep = i === 0 ? '' : ',';
      keys += `${sep}${f.key}${num(q)}`;
      if (elements) items += `${sep}${f.element}${num(q)}}`;
    }
    return [keys, items];
  }

  private fragments(symbol: number): Fragments | null {
    let f = this.bySymbol.get(symbol);
    if (f !== undefined) return f;
    if (!Number.isSafeInteger(symbol) || this.bySymbol.size >= MAX_SYMBOLS) return null;
    const ticker = this.tickerOf(symbol);
    const other = this.symbolOfTicker.get(ticker);
    if (/^[0-9]+$/.test(ticker) || ticker === '__proto__' || (other !== undefined && other !== symbol)) {
      f = null;
      if (other !== undefined) this.bySymbol.set(other, null);
    } else {
      const name = JSON.stringify(ticker);
      f = { element: `{"symbol":${symbol},"ticker":${name},"quantity":`, key: `${name}:` };
      this.symbolOfTicker.set(ticker, symbol);
    }
    this.bySymbol.set(symbol, f);
    return f;
  }
}
