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

const { values } = parseArgs({
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
const cfg = loadConfig();
const instruments = loadBaskets(cfg.basketsFile || undefined);
const url = localNatsUrl(cfg);
const usage = 'usage: npm run fill -- --client ID (--symbol TICKER|ID | --basket) --quantity N [--side buy|sell] [--price P]';

const symbols: number[] = [];
if (values.basket) {
  symbols.push(...[...instruments.baskets.values()][0]!.components.flatMap((c) => Array<number>(c.weight).fill(c.symbol)));
} else {
  const s = values.symbol === undefined ? undefined : instruments.symbolOf(values.symbol.toUpperCase()) ?? Number(values.symbol);
  if (s === undefined || !Number.isInteger(s)) throw new Error(`${usage}\nunknown symbol ${values.symbol}`);
  symbols.push(s);
}
const nc = await connectNats(url, 'publish-fill', { waitForServer: false, role: 'feed', credsFile: localNatsCreds(cfg, 'feed') });
await ensureFillStream(nc);
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
  if (problem) throw new Error(`${usage}\n${problem}`);
  const ack = await js.publish(fillSubject(fill.client_id), encode(fill));
  console.log(`published ${JSON.stringify(fill)} as stream seq ${ack.seq}`);
}
await nc.close();
