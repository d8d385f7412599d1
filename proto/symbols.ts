/**
 * The NDFEX exchange's default symbol set (docs/ndfex-protocol.md).
 * Ids are what the exchange's binary feeds carry; tickers are what people read.
 */
export interface ExchangeSymbol {
  readonly id: number;
  readonly ticker: string;
  readonly tickSize: number;
}

export const NDFEX_SYMBOLS: readonly ExchangeSymbol[] = [
  { id: 1, ticker: 'GOLD', tickSize: 10 },
  { id: 2, ticker: 'BLUE', tickSize: 5 },
  { id: 3, ticker: 'KNAN', tickSize: 5 },
  { id: 4, ticker: 'STED', tickSize: 5 },
  { id: 5, ticker: 'FISH', tickSize: 5 },
  { id: 6, ticker: 'DILN', tickSize: 5 },
  { id: 7, ticker: 'SORN', tickSize: 5 },
  { id: 8, ticker: 'RYAN', tickSize: 5 },
  { id: 9, ticker: 'LYON', tickSize: 5 },
  { id: 10, ticker: 'WLSH', tickSize: 5 },
  { id: 11, ticker: 'LEWI', tickSize: 5 },
  { id: 12, ticker: 'BDIN', tickSize: 5 },
  { id: 13, ticker: 'UNDY', tickSize: 10 },
];

/** The exchange's own ETF: one UNDY unit is one unit of each of symbols 3..12. */
export const UNDY_SYMBOL_ID = 13;

/** Lot sizes the exchange accepts on one order. */
export const MAX_LOT = 1000;
