import { runService } from '../shared/process.js';
import { loadConfig } from '../config/config.js';
import { processSettings } from '../config/process.js';
import { startEngine } from './service.js';
import { EngineFault } from './fault.js';

await runService('engine', processSettings(process.env), () => loadConfig(process.env), (cfg, natsUrl, log) =>
  startEngine(cfg, natsUrl, log, (err) => {
    // EngineFault names the loop that stopped (journal write, fill stream); its cause is the error.
    const what = err instanceof EngineFault ? err.what : 'engine';
    log.fatal({ err: err instanceof EngineFault ? err.cause : err, what }, `${what} failed: exiting so a restart rebuilds state from the journal and the fill stream`);
    process.exit(1);
  }),
);
