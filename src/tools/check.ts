/**
 * Operator consistency check: rebuilds every account from the journal and the
 * fill stream alone, each decision among the fills where the engine made it,
 * compares it with the live engine's state at the same stream positions (an
 * acknowledged operation missing or doubled shows there), checks each accepted
 * conversion's answered positions, and that conversions conserved units weight
 * for weight. Exits 1 on any difference, naming the accounts.
 *   npm run check            (NATS_URL defaults to the launcher's local server)
 */
import { loadConfig, localEngineShards, localNatsCreds, localNatsUrl } from '../config/config.js';
import { loadBaskets } from '../config/baskets.js';
import { connectNats } from '../shared/nats.js';
import { createLogger } from '../shared/log.js';
import { EngineClient } from '../shared/engine-client.js';
import { consistencyCheck, describeReport } from '../engine/check.js';
import { ENGINE_ADMIN_SUBJECT } from '../../proto/subjects.js';
import { refusalMessage } from '../../proto/messages.js';

const cfg = loadConfig();
const log = createLogger('check', 'warn');
const nc = await connectNats(localNatsUrl(cfg), 'etf-check', { waitForServer: false, role: 'operator', credsFile: localNatsCreds(cfg, 'operator') });
const engine = new EngineClient(nc, 30_000, { admin: true, shards: localEngineShards(cfg) });
const reply = await engine.call({ op: 'dump' });
if (!reply.ok) {
  console.error(`engine did not answer: ${refusalMessage(reply.error)}`);
  process.exit(2);
}
const report = await consistencyCheck(nc, reply.result, loadBaskets(cfg.basketsFile || undefined), log);
engine.close();
await nc.close();
console.log(JSON.stringify(report, null, 2));
if (report.ok) console.log('consistent: live state equals the rebuild (every acknowledged operation, once), conversions conserve units');
else {
  for (const line of describeReport(report)) console.error(line);
  console.log('INCONSISTENT');
}
process.exit(report.ok ? 0 : 1);
