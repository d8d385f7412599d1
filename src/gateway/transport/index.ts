import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ConfigError } from '../../config/config.js';
import type { Logger } from '../../shared/log.js';
import type { HttpServer, HttpServerKind, HttpServerOptions } from './types.js';

export type { HttpServer, HttpServerKind } from './types.js';

/**
 * The native uWS binary for this Node, loaded on its own first: the
 * registry's build (@trufflesuite/uws-js-unofficial) would otherwise print two
 * warnings and fall back to a partial JavaScript imitation of uWS, which the
 * gateway must never run on. Builds keep the binary at the package root
 * (official) or in binaries/ (that one).
 */
function nativeUws(): string | null {
  const require = createRequire(import.meta.url);
  let dir: string;
  try {
    dir = dirname(require.resolve('uWebSockets.js/package.json'));
  } catch (err) {
    return `uWebSockets.js is not installed (${(err as Error).message.split('\n')[0]})`;
  }
  const name = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  const file = [join(dir, name), join(dir, 'binaries', name)].find((f) => existsSync(f));
  if (!file) return `its package has no ${name} (no build for Node ${process.version}, ABI ${process.versions.modules})`;
  try {
    require(file);
    return null;
  } catch (err) {
    return (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
  }
}

/** The uWS adapter's module, or why uWebSockets.js does not load on this Node (its native build is per Node ABI and libc). */
export async function loadUws(): Promise<{ ok: true; uwsServer: (o: HttpServerOptions) => HttpServer } | { ok: false; reason: string }> {
  const reason = nativeUws();
  if (reason) return { ok: false, reason };
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
    if (kind === 'uws') throw uwsRefused(uws.reason);
    log.warn({ reason: uws.reason, node: process.version, abi: process.versions.modules }, `uWebSockets.js does not load on this Node: serving HTTP and WebSocket with node:http and ws; ${uwsAdvice()}`);
  }
  const { nodeServer } = await import('./node.js');
  return nodeServer(opts);
}

const uwsRefused = (reason: string) => new ConfigError(`HTTP_SERVER=uws: uWebSockets.js does not load (${reason}); ${uwsAdvice()}, or set HTTP_SERVER=node`);

/** Before anything else starts: HTTP_SERVER=uws on a Node without a uWS build is a configuration mistake, said at once. */
export async function checkHttpServer(kind: HttpServerKind | 'auto'): Promise<void> {
  if (kind !== 'uws') return;
  const uws = await loadUws();
  if (!uws.ok) throw uwsRefused(uws.reason);
}
