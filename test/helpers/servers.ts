import { describe } from 'vitest';
import { loadUws, type HttpServerKind } from '../../src/gateway/transport/index.js';

/** Whether uWebSockets.js loads on this Node (its builds are per Node ABI): the uws runs are skipped, visibly, where it does not. */
export const uwsLoads = (await loadUws()).ok;

/**
 * One suite run per HTTP server (src/gateway/transport): `fn` gets the
 * server's name, to pass on as `{ http: serverHttp(kind) }`. The uws run is
 * a skipped describe, named so, where uWS does not load.
 */
export function eachServer(name: string, fn: (kind: HttpServerKind) => void): void {
  for (const kind of ['uws', 'node'] as const) {
    const skip = kind === 'uws' && !uwsLoads;
    describe.skipIf(skip)(`${name} [${kind}${skip ? `: uWebSockets.js does not load on Node ${process.version}` : ''}]`, () => fn(kind));
  }
}

/** A test config's http section on this server. */
export const serverHttp = (kind: HttpServerKind) => ({ host: '127.0.0.1', port: 0, maxBodyBytes: 16384, server: kind });
