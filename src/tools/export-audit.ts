/**
 * Operator export of the audit trail as NDJSON, for grading: one AuditEntry
 * per line (an accepted conversion with its `scorecard`), then one
 * PnlSplitEntry per team (proto/audit.ts):
 *   npm run export-audit -- [--out audit.ndjson]     (stdout without --out)
 */
import { createWriteStream } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadConfig, localEngineShards, localNatsCreds, localNatsUrl } from '../config/config.js';
import { loadBaskets } from '../config/baskets.js';
import { connectNats } from '../shared/nats.js';
import { exportAudit } from '../engine/audit-export.js';

const { values } = parseArgs({ options: { out: { type: 'string' } } });
const cfg = loadConfig();
const nc = await connectNats(localNatsUrl(cfg), 'etf-export', { waitForServer: false, role: 'operator', credsFile: localNatsCreds(cfg, 'operator') });
const out = values.out ? createWriteStream(values.out) : process.stdout;
const n = await exportAudit(nc, loadBaskets(cfg.basketsFile || undefined), (line) => out.write(`${line}\n`), localEngineShards(cfg));
await nc.close();
if (values.out) await new Promise((r) => (out as ReturnType<typeof createWriteStream>).end(r));
console.error(`exported ${n} audit entries`);
