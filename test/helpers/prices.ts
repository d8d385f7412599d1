import type { Bbo, EtfPrice } from '../../proto/marketdata.js';

/** UNDY's symbol id in the default baskets file. */
export const UNDY = 13;

/** A best bid/ask one tick either side of `mid`, as the feed bridge publishes it. */
export const bbo = (symbol: number, mid: number): Bbo => ({ symbol, bid: mid - 1, bid_qty: 10, ask: mid + 1, ask_qty: 10, ts: 0, md_seq: 0 });

/** UNDY's price record as the pricing actor publishes it, for a NAV and the ETF's own mid. */
export const price = (nav: number, etfMid: number): EtfPrice => ({
  etf: 'UNDY',
  symbol: UNDY,
  nav,
  create_cost: nav + 10,
  redeem_proceeds: nav - 10,
  etf_bid: etfMid - 1,
  etf_ask: etfMid + 1,
  premium: (etfMid - nav) / nav,
  create_edge: etfMid - 1 - (nav + 10),
  redeem_edge: nav - 10 - (etfMid + 1),
  ts: Date.now(),
});
