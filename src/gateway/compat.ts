import type { PositionBody, PositionsBody, SymbolsBody } from '../../proto/http.js';
import { namedHoldings, positionsByTicker } from '../../proto/engine.js';
import { NDFEX_SYMBOLS } from '../../proto/symbols.js';
import type { Instruments } from '../config/baskets.js';
import type { HttpCall } from './http.js';
import type { Params } from './params.js';
import { authenticate, engineError, type RouteDeps } from './routes.js';

/**
 * The read routes of NDFEX's own ETF service, which teams already script
 * against: /positions/<client_id>[/<symbol>] and /symbols. Same
 * authentication as every route here, and a team reads only its own account.
 */
export async function positions(ex: HttpCall, deps: RouteDeps, instruments: Instruments, params: Params, rest: string): Promise<void> {
  const [idText, symbolText, ...extra] = rest.split('/');
  if (!idText || !/^[0-9]{1,10}$/.test(idText) || extra.length > 0) {
    return ex.error('not_found', 'expected /positions/<client_id> or /positions/<client_id>/<symbol>');
  }
  const clientId = await authenticate(ex, deps, params);
  if (clientId === null) return;
  const reply = await deps.engine.call({ op: 'holdings', clientId });
  if (!reply.ok) return engineError(ex, reply, instruments.tickerOf);
  const h = namedHoldings(reply.result, instruments.tickerOf);
  if (h.client_id !== Number(idText)) return ex.error('forbidden', 'a team reads only its own positions', { field: 'client_id' });
  if (symbolText === undefined || symbolText === '') {
    const body: PositionsBody = { client_id: h.client_id, positions: h.positions, holdings: positionsByTicker(reply.result.positions, instruments.tickerOf) };
    return ex.json(200, body);
  }
  const symbol = instruments.symbolOf(decodeURIComponent(symbolText).toUpperCase());
  if (symbol === undefined) return ex.error('not_found', `unknown symbol ${symbolText}`, { field: 'symbol' });
  const body: PositionBody = { client_id: h.client_id, symbol, ticker: instruments.tickerOf(symbol), quantity: h.positions.find((p) => p.symbol === symbol)?.quantity ?? 0 };
  ex.json(200, body);
}

export function symbols(ex: HttpCall, instruments: Instruments): void {
  const etfs = new Map([...instruments.baskets.values()].map((b) => [b.symbol, b.name]));
  const listed: SymbolsBody['symbols'] = NDFEX_SYMBOLS.map((s) => ({ symbol: s.id, ticker: s.ticker, tick_size: s.tickSize, etf: etfs.has(s.id) }));
  for (const [symbol, ticker] of etfs) if (!NDFEX_SYMBOLS.some((s) => s.id === symbol)) listed.push({ symbol, ticker, tick_size: null, etf: true });
  ex.json(200, { symbols: listed } satisfies SymbolsBody);
}
