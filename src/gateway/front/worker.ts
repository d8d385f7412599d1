import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { join } from 'node:path';
import { createLogger } from '../../shared/log.js';
import { PROJECT_ROOT } from '../../config/config.js';
import { startFront, type Front, type FrontOptions } from './front.js';

/**
 * The front on a thread of its own: its parsing and socket I/O then run
 * beside the gateway's (uWS, authentication, the engine client) instead of
 * taking turns with them on one thread. Same behaviour as startFront.
 */
type WorkerOptions = Omit<FrontOptions, 'log'> & { logLevel: string };
type FromWorker = { type: 'listening'; port: number } | { type: 'failed'; message: string } | { type: 'closed' };

export function startFrontThread(opts: FrontOptions): Promise<Front> {
  const { log, ...rest } = opts;
  // The built file, also when this module was loaded from source (the tests): a thread runs plain JavaScript.
  const worker = new Worker(join(PROJECT_ROOT, 'dist/src/gateway/front/worker.js'), { workerData: { ...rest, logLevel: log.level } satisfies WorkerOptions });
  return new Promise((resolve, reject) => {
    let closed: (() => void) | null = null;
    worker.on('message', (m: FromWorker) => {
      if (m.type === 'listening') {
        resolve({
          port: m.port,
          close: (graceMs) =>
            new Promise<void>((done) => {
              closed = done;
              worker.postMessage({ type: 'close', graceMs });
            }),
        });
      } else if (m.type === 'failed') reject(new Error(m.message));
      else if (m.type === 'closed') void worker.terminate().then(() => closed?.());
    });
    worker.once('error', (err) => {
      log.error({ err }, 'front thread failed');
      reject(err);
    });
    // Without its front the gateway hears nobody: better gone, and restarted by the launcher, than deaf.
    worker.once('exit', (code) => {
      if (closed) return;
      log.fatal({ code }, 'front thread exited: stopping the gateway');
      process.exit(1);
    });
  });
}

if (!isMainThread && parentPort) {
  const port = parentPort;
  const { logLevel, ...opts } = workerData as WorkerOptions;
  startFront({ ...opts, log: createLogger('front', logLevel) }).then(
    (front: Front) => {
      port.on('message', (m: { type: 'close'; graceMs?: number }) => {
        if (m.type === 'close') void front.close(m.graceMs).then(() => port.postMessage({ type: 'closed' } satisfies FromWorker));
      });
      port.postMessage({ type: 'listening', port: front.port } satisfies FromWorker);
    },
    (err: unknown) => port.postMessage({ type: 'failed', message: err instanceof Error ? err.message : String(err) } satisfies FromWorker),
  );
}
