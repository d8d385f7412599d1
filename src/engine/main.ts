import { loadConfig } from '../config/config.js';
import { createLogger } from '../shared/log.js';
import { startEngine } from './service.js';
import { onShutdown } from '../shared/process.js';

const cfg = loadConfig();
const log = createLogger('engine', cfg.logLevel);
if (!cfg.nats.url) {
  log.fatal('NATS_URL is not set: run the engine through the launcher (npm start) or give it a server');
  process.exit(2);
}
try {
  const engine = await startEngine(cfg, cfg.nats.url, log, (err) => {
    log.fatal({ err }, 'journal write failed: exiting so a restart rebuilds state from the journal');
    process.exit(1);
  });
  onShutdown(log, () => engine.close());
} catch (err) {
  log.fatal({ err: err instanceof Error ? err.message : err }, 'engine failed to start');
  process.exit(1);
}
