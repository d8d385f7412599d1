/**
 * A starter arbitrage bot for teams: the loop of ETF arbitrage, conversion side.
 *
 *  1. Read fresh prices from the stream: each ETF price says what the basket
 *     costs at the asks (create_cost) and fetches at the bids
 *     (redeem_proceeds) against the ETF's own bid and ask, i.e. the edge of
 *     creating (buy basket, create, sell ETF) or redeeming (buy ETF, redeem,
 *     sell basket) per unit, before fees. A price is acted on once, and only
 *     while it is fresh: an edge seen once is not taken again and again.
 *  2. Size with a dry run: ask the service what converting N units would do
 *     (deltas and fee, or the refusal) without changing anything.
 *  3. Convert only while the edge beats the fee: edge × N − fee > threshold.
 *  4. Score it: every conversion is printed with its edge, and at the end the
 *     service's own scorecard of each one (its value at the mid prices of
 *     its moment, fee included) and the team's P&L.
 *
 * The legs are traded on the exchange (NDFEX), not here: before a create the
 * team buys the basket's components, after it sells the ETF units; before a
 * redeem it buys ETF units, after it sells the components. This bot converts
 * what the team already holds; add the exchange orders to make the edge real.
 *
 *   npm start                       # the system, with the built-in simulator
 *   npm run bot -- --for 60         # another terminal: team1, 60 seconds
 *
 * Options: --url (ETF_URL), --user/--password (ETF_USER/ETF_PASSWORD, default
 * team1/team1pass), --etf UNDY, --threshold 0 (price units a conversion must
 * earn after its fee), --max-units 5 (per conversion), --max-age-ms 2000
 * (older prices are not acted on), --for SECONDS (default: until Ctrl-C).
 */
import { parseArgs } from 'node:util';
import { EtfApiError, EtfClient, type LiveHoldings } from '../src/client/index.js';
import type { EtfPrice } from '../proto/marketdata.js';

const { values } = parseArgs({
  options: {
    url: { type: 'string', default: process.env.ETF_URL ?? 'http://localhost:8080' },
    user: { type: 'string', default: process.env.ETF_USER ?? 'team1' },
    password: { type: 'string', default: process.env.ETF_PASSWORD ?? 'team1pass' },
    etf: { type: 'string', default: 'UNDY' },
    threshold: { type: 'string', default: '0' },
    'max-units': { type: 'string', default: '5' },
    'max-age-ms': { type: 'string', default: '2000' },
    for: { type: 'string' },
  },
});
const threshold = Number(values.threshold);
const maxUnits = Number(values['max-units']);
const maxAgeMs = Number(values['max-age-ms']);
const log = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 23)}] ${msg}`);
const signed = (v: number | null | undefined) => (v === null || v === undefined ? '—' : `${v > 0 ? '+' : ''}${Math.round(v * 100) / 100}`);

const client = new EtfClient({ url: values.url, username: values.user, password: values.password, onRetry: (err, n) => log(`retrying (${n}): ${(err as Error).message}`) });
const basket = (await client.etfs()).etfs.find((e) => e.name === values.etf);
if (!basket) {
  console.error(`bot: no ETF named ${values.etf}`);
  process.exit(2);
}
const startPnl = (await client.holdings()).pnl?.total ?? 0;

let holdings: LiveHoldings | null = null;
let latest: EtfPrice | null = null;
/** The `ts` of the last price acted on: each price is looked at once. */
let usedTs = 0;
let busy = false;
let stopping = false;
/** This run's conversions, in order: the scorecard at the end. */
const made: { id: string; side: 'create' | 'redeem'; units: number; edge: number; fee: number }[] = [];

/** How many units the holdings allow: whole baskets for a create, ETF units for a redeem. */
const canCreate = (h: LiveHoldings) => Math.min(...basket.components.map((c) => Math.floor((h.holdings[c.ticker] ?? 0) / c.weight)));
const canRedeem = (h: LiveHoldings) => h.holdings[basket.name] ?? 0;

async function act(): Promise<void> {
  const p = latest;
  if (busy || stopping || !holdings || !p || p.ts <= usedTs) return;
  usedTs = p.ts;
  // 1. Fresh prices only: the market has moved since an old one.
  if (Date.now() - p.ts > maxAgeMs) return;
  // The better side of the two the holdings allow (a missing quote: no edge to take).
  const sides = [
    { side: 'create' as const, edge: p.create_edge ?? -Infinity, room: Math.min(maxUnits, canCreate(holdings)) },
    { side: 'redeem' as const, edge: p.redeem_edge ?? -Infinity, room: Math.min(maxUnits, canRedeem(holdings)) },
  ].filter((s) => s.room >= 1 && Number.isFinite(s.edge));
  if (!sides.length) return;
  const { side, edge, room } = sides.reduce((a, b) => (b.edge > a.edge ? b : a));
  busy = true;
  try {
    // 2. Size with a dry run: the fee (and any refusal) for `room` units, nothing changed.
    const dry = await (side === 'create' ? client.create(room, { etf: basket!.name, dryRun: true }) : client.redeem(room, { etf: basket!.name, dryRun: true }));
    // 3. Convert only while the edge beats the fee. The fee may have a fixed part: fewer units may not pay.
    const earns = edge * room - dry.fee;
    if (earns <= threshold) return;
    const r = await (side === 'create' ? client.create(room, { etf: basket!.name }) : client.redeem(room, { etf: basket!.name }));
    made.push({ id: r.request_id, side, units: room, edge, fee: r.fee });
    // The answer holds the account after the conversion: sizing the next one needs no wait for the stream.
    if (r.seq > holdings!.seq) holdings = { ...holdings!, seq: r.seq, holdings: { ...r.holdings }, cash: r.cash };
    log(`${side === 'create' ? 'created' : 'redeemed'} ${room} ${basket!.name} at edge ${signed(edge)}/unit, fee ${r.fee}: ${signed(edge * room - r.fee)} if the legs trade at these prices (${r.request_id})`);
  } catch (err) {
    log(`${side} refused: ${err instanceof EtfApiError ? `${err.code}: ${err.message}` : (err as Error).message}`);
  } finally {
    busy = false;
  }
}

const stream = client.stream({
  prices: [basket.name],
  onHoldings: (h) => {
    if (!holdings || h.seq >= holdings.seq) holdings = { ...h, holdings: { ...h.holdings } };
  },
  onPrice: (p) => {
    if (p.etf !== basket.name) return;
    latest = p;
    void act();
  },
  onStatus: (s, detail) => {
    log(`stream ${s}${detail ? `: ${detail}` : ''}`);
    if (s === 'refused') process.exit(1);
  },
});
log(`watching ${basket.name} for ${values.user}: convert up to ${maxUnits} units when edge × units − fee beats ${threshold}`);

/** 4. The scorecard: the service's score of each conversion (GET /history), then the P&L. */
async function report(): Promise<void> {
  const scored = new Map<string, NonNullable<Awaited<ReturnType<typeof client.request>>['scorecard']>>();
  // The service scores a conversion when the engine's outcome reaches its desk: a moment after the answer.
  for (let attempt = 0; attempt < 20 && scored.size < made.length; attempt++) {
    if (attempt) await new Promise((r) => setTimeout(r, 100));
    const page = await client.history({ limit: 500 });
    for (const e of page.entries) if (e.scorecard) scored.set(e.request_id, e.scorecard);
  }
  let total = 0;
  for (const m of made) {
    const s = scored.get(m.id);
    if (s?.edge !== null && s?.edge !== undefined) total += s.edge;
    log(`scorecard ${m.id}: ${m.side} ${m.units} ${basket!.name}, seen edge ${signed(m.edge)}/unit, fee ${m.fee}, worth at mid ${signed(s?.edge)}, at the touch ${signed(s?.quoted_edge)}`);
  }
  const end = await client.holdings();
  log(`${made.length} conversion(s), worth ${signed(total)} at mid; P&L ${signed(end.pnl?.total)} (was ${signed(startPnl)}, change ${signed((end.pnl?.total ?? 0) - startPnl)})${end.pnl?.unmarked.length ? `; not marked: ${end.pnl.unmarked.join(', ')}` : ''}`);
}

async function stop(): Promise<void> {
  stopping = true;
  while (busy) await new Promise((r) => setTimeout(r, 10));
  stream.close();
  await report();
  process.exit(0);
}
process.once('SIGINT', () => void stop());
if (values.for) setTimeout(() => void stop(), Number(values.for) * 1000);
