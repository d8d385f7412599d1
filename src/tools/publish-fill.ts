/**
 * Pushes a test fill onto the exchange position feed, as the feed bridge would:
 *   npm run fill -- --client 1 --symbol KNAN --side buy --quantity 10 --price 100
 * NATS_URL defaults to the launcher's local server.
 */
import { parseArgs } from 'node:util';
import { jetstream } from '@nats-io/jetstream';
import { connectNats } from '../shared/nats.js';
import { ensureFillStream } from '../shared/streams.js';
import { encode } from '../../proto/codec.js';
import { fillProblem, FILL_SIDE_BUY, FILL_SIDE_SELL, type Fill } from '../../proto/fill.js';
import { fillSubject } from '../../proto/subjects.js';
import { loadConfig, localNatsCreds, localNatsUrl } from '../config/config.js';
import { loadBaskets } from '../config/baskets.js';

const usage = 'usage: npm run fill -- --client ID (--symbol TICKER|ID | --basket) --quantity N [--side buy|sell] [--price P]';
/** One line and exit 2: a test fill that is not what was meant is worse than none. */
function refuse(problem: string): never {
  console.error(`fill: ${problem} (${usage})`);
  process.exit(2);
}

const { values } = (() => {
  try {
    return parseArgs({
      options: {
        client: { type: 'string' },
        symbol: { type: 'string' },
        side: { type: 'string', default: 'buy' },
        quantity: { type: 'string' },
        price: { type: 'string', default: '100' },
        seq: { type: 'string' },
        basket: { type: 'boolean', default: false },
      },
    });
  } catch (err) {
    refuse((err as Error).message);
  }
})();
const cfg = loadConfig();
const instruments = loadBaskets(cfg.basketsFile || undefined);
const url = localNatsUrl(cfg);

if (values.side !== 'buy' && values.side !== 'sell') refuse(`--side must be buy or sell, not "${values.side}"`);
if (values.client === undefined || !/^[0-9]+$/.test(values.client)) refuse('--client must be a client_id (a whole number)');
if (values.quantity === undefined || !/^[0-9]+$/.test(values.quantity)) refuse('--quantity must be a whole number');
if (!/^-?[0-9]+$/.test(values.price)) refuse('--price must be a whole number of price units');
if (values.basket && values.symbol !== undefined) refuse('give --symbol or --basket, not both');
const symbols: number[] = [];
if (values.basket) {
  symbols.push(...[...instruments.baskets.values()][0]!.components.flatMap((c) => Array<number>(c.weight).fill(c.symbol)));
} else {
  if (values.symbol === undefined) refuse('--symbol (a ticker or symbol id) or --basket is required');
  const s = instruments.symbolOf(values.symbol.toUpperCase());
  if (s === undefined) refuse(`unknown symbol ${values.symbol}`);
  symbols.push(s);
}
const nc = await connectNats(url, 'publish-fill', { waitForServer: false, role: 'feed', credsFile: localNatsCreds(cfg, 'feed') });
await ensureFillStream(nc, cfg.nats.replicas);
const js = jetstream(nc);
let seq = Number(values.seq ?? Date.now() % 1e9);
for (const symbol of symbols) {
  const fill: Fill = {
    seq: seq++,
    client_id: Number(values.client),
    symbol,
    side: values.side === 'sell' ? FILL_SIDE_SELL : FILL_SIDE_BUY,
    quantity: Number(values.quantity),
    price: Number(values.price),
  };
  const problem = fillProblem(fill);
  if (problem) refuse(problem);
  const ack = await js.publish(fillSubject(fill.client_id), encode(fill));
  console.log(`published ${JSON.stringify(fill)} as stream seq ${ack.seq}`);
}
await nc.close();
