import { z } from 'zod';
import { NDFEX_SYMBOLS, UNDY_SYMBOL_ID } from '../../proto/symbols.js';
import { ConfigError, oneLine, readJsonFile } from './config.js';

/** One component of a basket: `weight` units of `symbol` per creation unit. */
export interface Component {
  symbol: number;
  ticker: string;
  weight: number;
}

export interface Basket {
  /** The ETF's name, as teams pass it in `etf_name`. */
  name: string;
  /** The symbol id the ETF's own units are held under. */
  symbol: number;
  components: Component[];
  /** Creation unit: `amount` must be a multiple of it (1: any whole number). */
  unit: number;
}

/**
 * The basket in force at `now` (ms): the latest version whose `from` has come,
 * else the configured one (version 0). Conversions (engine), prices and
 * GET /etfs all decide with this one rule.
 */
export function basketInForce(basket: Basket, versions: readonly { version: number; from: number; components: Component[] }[] | undefined, now: number): { version: number; basket: Basket } {
  for (let i = (versions?.length ?? 0) - 1; i >= 0; i--) {
    const v = versions![i]!;
    if (v.from <= now) return { version: v.version, basket: { ...basket, components: v.components } };
  }
  return { version: 0, basket };
}

/** Every symbol the engine keeps positions in: the exchange's, plus ETFs not listed there. */
export interface Instruments {
  tickerOf(symbol: number): string;
  symbolOf(ticker: string): number | undefined;
  baskets: Map<string, Basket>;
}

const basketFile = z.object({
  etfs: z
    .array(
      z.object({
        name: z.string().regex(/^[A-Za-z0-9_.-]{1,16}$/),
        // Required for ETFs the exchange does not list: the journal stores
        // positions by symbol id, so an id must never depend on file order.
        symbol: z.number().int().positive().optional(),
        components: z.record(z.string(), z.number().int().positive()),
        /** Creation unit size: conversions in multiples of it (default 1). */
        unit: z.number().int().positive().optional(),
      }),
    )
    .min(1),
});

export const DEFAULT_BASKETS = {
  etfs: [
    {
      name: 'UNDY',
      symbol: UNDY_SYMBOL_ID,
      components: Object.fromEntries(NDFEX_SYMBOLS.filter((s) => s.id >= 3 && s.id <= 12).map((s) => [s.ticker, 1])),
    },
  ],
};

export function loadBaskets(path: string | undefined): Instruments {
  const raw: unknown = path ? readJsonFile(path, 'baskets file') : DEFAULT_BASKETS;
  const parsed = basketFile.safeParse(raw);
  if (!parsed.success) throw new ConfigError(`baskets file ${path}: ${oneLine(z.prettifyError(parsed.error))}`);
  return buildInstruments(parsed.data, path ?? '(default)');
}

export function buildInstruments(def: z.infer<typeof basketFile>, origin: string): Instruments {
  const tickers = new Map<number, string>(NDFEX_SYMBOLS.map((s) => [s.id, s.ticker]));
  const ids = new Map<string, number>(NDFEX_SYMBOLS.map((s) => [s.ticker, s.id]));
  const fail = (msg: string): never => {
    throw new ConfigError(`baskets file ${origin}: ${msg}`);
  };
  // First pass: every ETF gets its symbol, so an ETF may hold another ETF.
  for (const etf of def.etfs) {
    const listed = ids.get(etf.name);
    const symbol = etf.symbol ?? listed ?? fail(`ETF ${etf.name} is not an exchange symbol: give it a "symbol" id`);
    if (listed !== undefined && listed !== symbol) fail(`ETF ${etf.name} is exchange symbol ${listed}, not ${symbol}`);
    const holder = tickers.get(symbol);
    if (holder !== undefined && holder !== etf.name) fail(`ETF ${etf.name}: symbol ${symbol} is already ${holder}`);
    tickers.set(symbol, etf.name);
    ids.set(etf.name, symbol);
  }
  const baskets = new Map<string, Basket>();
  for (const etf of def.etfs) {
    if (baskets.has(etf.name)) fail(`ETF ${etf.name} is defined twice`);
    const symbol = ids.get(etf.name)!;
    const components = Object.entries(etf.components).map(([ticker, weight]): Component => {
      const id = ids.get(ticker) ?? fail(`ETF ${etf.name}: unknown component symbol ${ticker}`);
      if (id === symbol) fail(`ETF ${etf.name} cannot contain itself`);
      return { symbol: id, ticker, weight };
    });
    if (components.length === 0) fail(`ETF ${etf.name} has no components`);
    baskets.set(etf.name, { name: etf.name, symbol, components, unit: etf.unit ?? 1 });
  }
  return {
    baskets,
    tickerOf: (symbol) => tickers.get(symbol) ?? String(symbol),
    symbolOf: (ticker) => ids.get(ticker) ?? (/^\d+$/.test(ticker) && tickers.has(Number(ticker)) ? Number(ticker) : undefined),
  };
}
