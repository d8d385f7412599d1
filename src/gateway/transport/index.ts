import { ConfigError } from '../../config/config.js';
import type { Logger } from '../../shared/log.js';
import type { HttpServer, HttpServerKind, HttpServerOptions } from './types.js';

export type { HttpServer, HttpServerKind } from './types.js';

/** The uWS adapter's module, or why uWebSockets.js does not load on this Node (its native build is per Node ABI). */
export async function loadUws(): Promise<{ ok: true; uwsServer: (o: HttpServerOptions) => HttpServer } | { ok: false; reason: string }> {
  try {
    const m = await import('./uws.js');
    return { ok: true, uwsServer: m.uwsServer };
  } catch (err) {
    return { ok: false, reason: (err instanceof Error ? err.message : String(err)).split('\n')[0]! };
  }
}

/** What to do for a uWS build on this Node: the official release tags ship a binary per Node ABI. */
export const uwsAdvice = (): string =>
  `for uWS on Node ${process.version}, install a uWebSockets.js release that ships uws_${process.platform}_${process.arch}_${process.versions.modules}.node ` +
  `(the official builds: npm install uNetworking/uWebSockets.js#<release tag>, from github.com/uNetworking/uWebSockets.js/releases), or run on Node 20`;

/**
 * The server HTTP_SERVER asks for. `auto`: uWS where it loads, else node:http
 * with one log line saying why and how to get uWS; `uws` insists (start-up
 * stops with that reason); `node` never loads uWS.
 */
export async function createHttpServer(kind: HttpServerKind | 'auto', opts: HttpServerOptions, log: Logger): Promise<HttpServer> {
  if (kind !== 'node') {
    const uws = await loadUws();
    if (uws.ok) return uws.uwsServer(opts);
    if (kind === 'uws') throw new ConfigError(`HTTP_SERVER=uws: uWebSockets.js does not load (${uws.reason}); ${uwsAdvice()}, or set HTTP_SERVER=node`);
    log.warn({ reason: uws.reason, node: process.version, abi: process.versions.modules }, `uWebSockets.js does not load on this Node: serving HTTP and WebSocket with node:http and ws; ${uwsAdvice()}`);
  }
  const { nodeServer } = await import('./node.js');
  return nodeServer(opts);
}
