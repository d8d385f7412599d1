import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import type uWS from 'uWebSockets.js';
import { PROJECT_ROOT } from '../config/config.js';
import type { Logger } from '../shared/log.js';
import type { GatewayMetrics } from './metrics.js';

/** The pages' folder: plain HTML, CSS and ES modules, served as they are (no build step). */
export const WEB_DIR = join(PROJECT_ROOT, 'web');
/** Where the pages' assets are served: `/web/<file>`. */
export const WEB_PREFIX = '/web/';
/** Page routes: a team's page and the operator's. */
export const PAGES: Record<string, string> = { '/': 'team.html', '/operator': 'operator.html', '/board': 'board.html' };

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

/**
 * Files served under /web/ from installed packages, by the name the pages use:
 * the charting library comes from node_modules, never a CDN (lab networks are closed).
 */
export const VENDOR_ASSETS: Record<string, string> = {
  'uPlot.iife.min.js': join(PROJECT_ROOT, 'node_modules/uplot/dist/uPlot.iife.min.js'),
  'uPlot.min.css': join(PROJECT_ROOT, 'node_modules/uplot/dist/uPlot.min.css'),
};

interface Asset {
  body: Buffer;
  type: string;
}

/** Reads web/ once: a handful of small files, and no path from a request ever reaches the file system. */
export function loadAssets(dir = WEB_DIR): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  for (const name of readdirSync(dir)) {
    const type = CONTENT_TYPES[extname(name)];
    const path = join(dir, name);
    if (!type || !statSync(path).isFile()) continue;
    assets.set(name, { body: readFileSync(path), type });
  }
  for (const [name, path] of Object.entries(VENDOR_ASSETS)) assets.set(name, { body: readFileSync(path), type: CONTENT_TYPES[extname(name)]! });
  return assets;
}

const SECURITY_HEADERS: [string, string][] = [
  ['x-content-type-options', 'nosniff'],
  ['referrer-policy', 'no-referrer'],
  ['x-frame-options', 'DENY'],
  // The pages load only their own scripts and talk only to this gateway (fetch and /ws).
  ['content-security-policy', "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'"],
];

/**
 * Serves the pages (GET / and GET /operator) and their assets (GET /web/*).
 * Registered before the gateway's catch-all route; other methods get 405 and
 * unknown assets a JSON 404, like every other route.
 */
export function mountStatic(app: uWS.TemplatedApp, metrics: GatewayMetrics, log: Logger, dir = WEB_DIR): void {
  let assets: Map<string, Asset>;
  try {
    assets = loadAssets(dir);
  } catch (err) {
    log.error({ err: err instanceof Error ? err.message : err, dir }, 'web pages folder unreadable: pages are not served');
    assets = new Map();
  }

  const serve = (res: uWS.HttpResponse, req: uWS.HttpRequest, route: string, file: string | undefined) => {
    const start = performance.now();
    const method = req.getCaseSensitiveMethod().toUpperCase();
    const asset = file === undefined ? undefined : assets.get(file);
    let status: number;
    if (method !== 'GET' && method !== 'HEAD') {
      status = 405;
      res.writeStatus('405 Method Not Allowed').writeHeader('allow', 'GET').writeHeader('content-type', 'application/json');
      res.end(JSON.stringify({ error: { code: 'method_not_allowed', message: `${req.getUrl()} takes GET` } }));
    } else if (!asset) {
      status = 404;
      res.writeStatus('404 Not Found').writeHeader('content-type', 'application/json');
      res.end(JSON.stringify({ error: { code: 'not_found', message: `no route ${req.getUrl()}` } }));
    } else {
      status = 200;
      res.writeStatus('200 OK').writeHeader('content-type', asset.type).writeHeader('cache-control', 'no-cache');
      for (const [k, v] of SECURITY_HEADERS) res.writeHeader(k, v);
      // uWS 20.30's endWithoutBody(length) leaves the response pending (it waits for those bytes): the length goes in by hand.
      if (method === 'HEAD') res.writeHeader('content-length', String(asset.body.length)).endWithoutBody();
      else res.end(asset.body);
    }
    metrics.observe(method, route, status, start);
  };

  for (const [path, file] of Object.entries(PAGES)) app.any(path, (res, req) => serve(res, req, path, file));
  app.any(`${WEB_PREFIX}*`, (res, req) => {
    const name = req.getUrl().slice(WEB_PREFIX.length);
    // Only flat names of files read at start-up: no path separators, no dot-files.
    serve(res, req, `${WEB_PREFIX}*`, /^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(name) ? name : undefined);
  });
}
