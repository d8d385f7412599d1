/**
 * A starter arbitrage bot for teams: it follows ETF prices and its own
 * holdings over the WebSocket stream, and creates ETF units when the basket
 * is cheap against the ETF (create edge above a threshold) or redeems them
 * when it is rich (redeem edge), as far as its holdings allow. Trading the
 * legs on NDFEX (buying the basket, selling the ETF) is yours to add: this bot
 * shows the conversion side, safely retried, and checks its books at the end.
 *
 *   npm start                       # the system, with the built-in simulator
 *   npm run bot -- --for 60         # another terminal: team1, 60 seconds
 *
 * Options: --url (ETF_URL), --user/--password (ETF_USER/ETF_PASSWORD, default
 * team1/team1pass), --etf UNDY, --threshold 5 (price units per unit),
 * --units 1 (per conversion), --for SECONDS (default: until Ctrl-C).
 */
import { parseArgs } from 'node:util';
import { EtfApiError, EtfClient, type LiveHoldings } from '../src/client/index.js';
import type { EtfPrice } from '../proto/marketdata.js';
import type { EtfsBody } from '../proto/http.js';

const { values } = parseArgs({
  options: {
    url: { type: 'string', default: process.env.ETF_URL ?? 'http://localhost:8080' },
    user: { type: 'string', default: process.env.ETF_USER ?? 'team1' },
    password: { type: 'string', default: process.env.ETF_PASSWORD ?? 'team1pass' },
    etf: { type: 'string', default: 'UNDY' },
    threshold: { type: 'string', default: '5' },
    units: { type: 'string', default: '1' },
    for: { type: 'string' },
  },
});
const threshold = Number(values.threshold);
const units = Number(values.units);
const log = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 23)}] ${msg}`);

const client = new EtfClient({ url: values.url, username: values.user, password: values.password, onRetry: (err, n) => log(`retrying (${n}): ${(err as Error).message}`) });
const basket = ((await client.etfs()) as EtfsBody).etfs.find((e) => e.name === values.etf);
if (!basket) {
  console.error(`bot: no ETF named ${values.etf}`);
  process.exit(2);
}

let holdings: LiveHoldings | null = null;
/** The latest price: a holdings change can make an edge worth taking too. */
let lastPrice: EtfPrice | null = null;
let busy = false;
let stopping = false;
let conversions = 0;

/** How many units the holdings allow: whole baskets for a create, ETF units for a redeem. */
const canCreate = (h: LiveHoldings) => Math.min(...basket.components.map((c) => Math.floor((h.holdings[c.ticker] ?? 0) / c.weight)));
const canRedeem = (h: LiveHoldings) => h.holdings[basket.name] ?? 0;

async function onPrice(p: EtfPrice): Promise<void> {
  if (p.etf !== basket!.name) return;
  lastPrice = p;
  if (busy || stopping || !holdings) return;
  const side =
    p.create_edge !== null && p.create_edge > threshold && canCreate(holdings) >= units ? 'create' : p.redeem_edge !== null && p.redeem_edge > threshold && canRedeem(holdings) >= units ? 'redeem' : null;
  if (!side) return;
  busy = true;
  try {
    const r = side === 'create' ? await client.create(units, { etf: basket!.name }) : await client.redeem(units, { etf: basket!.name });
    conversions++;
    log(`${side === 'create' ? 'created' : 'redeemed'} ${units} ${basket!.name} at edge ${side === 'create' ? p.create_edge : p.redeem_edge} (${r.request_id})`);
  } catch (err) {
    log(`${side} refused: ${err instanceof EtfApiError ? `${err.code}: ${err.message}` : (err as Error).message}`);
  } finally {
    busy = false;
  }
}

const stream = client.stream({
  prices: [basket.name],
  onHoldings: (h) => {
    holdings = { ...h, holdings: { ...h.holdings } };
    if (lastPrice) void onPrice(lastPrice);
  },
  onPrice: (p) => void onPrice(p),
  onStatus: (s, detail) => {
    log(`stream ${s}${detail ? `: ${detail}` : ''}`);
    if (s === 'refused') process.exit(1);
  },
});
log(`watching ${basket.name} for ${values.user}: create or redeem ${units} when an edge beats ${threshold}`);

/** The stream's view of the books must be the service's: compared at the same seq (fills may still be arriving). */
async function reconcile(): Promise<boolean> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const served = await client.holdings();
    const deadline = Date.now() + 2000;
    while ((holdings?.seq ?? -1) < served.seq && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (holdings?.seq !== served.seq) continue; // moved on meanwhile: ask again
    const same = JSON.stringify(served.holdings) === JSON.stringify(holdings.holdings);
    log(`${conversions} conversion(s); holdings ${same ? 'reconciled with GET /holdings' : `DIFFER from GET /holdings: ${JSON.stringify(holdings.holdings)} vs ${JSON.stringify(served.holdings)}`} at seq ${served.seq}`);
    return same;
  }
  log(`${conversions} conversion(s); holdings could not be compared: they kept changing`);
  return false;
}

async function stop(): Promise<void> {
  stopping = true;
  const stopped = new Promise<void>((r) => {
    const wait = () => (busy ? setTimeout(wait, 10) : r());
    wait();
  });
  await stopped;
  const ok = await reconcile();
  stream.close();
  process.exit(ok ? 0 : 1);
}
process.once('SIGINT', () => void stop());
if (values.for) setTimeout(() => void stop(), Number(values.for) * 1000);
