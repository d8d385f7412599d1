import { runService } from '../shared/process.js';
import { startGateway } from './server.js';

await runService('gateway', startGateway);
