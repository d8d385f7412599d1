import { loadConfig } from '../config/config.js';
import { createLogger } from '../shared/log.js';
import { onShutdown } from '../shared/process.js';
import { startGateway } from './server.js';

const cfg = loadConfig();
const log = createLogger('gateway', cfg.logLevel);
if (!cfg.nats.url) {
  log.fatal('NATS_URL is not set: run the gateway through the launcher (npm start) or give it a server');
  process.exit(2);
}
try {
  const gw = await startGateway(cfg, cfg.nats.url, log);
  onShutdown(log, () => gw.close());
} catch (err) {
  log.fatal({ err: err instanceof Error ? err.message : err }, 'gateway failed to start');
  process.exit(1);
}
