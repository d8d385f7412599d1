import { runService } from '../shared/process.js';
import { loadConfig } from '../config/config.js';
import { processSettings } from '../config/process.js';
import { startGateway } from './server.js';

await runService('gateway', processSettings(process.env), () => loadConfig(process.env), startGateway);
