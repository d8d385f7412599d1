import { runService } from '../shared/process.js';
import { startEngine } from './service.js';

await runService('engine', (cfg, natsUrl, log) =>
  startEngine(cfg, natsUrl, log, (err) => {
    log.fatal({ err }, 'journal write failed: exiting so a restart rebuilds state from the journal');
    process.exit(1);
  }),
);
