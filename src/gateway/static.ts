import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { PROJECT_ROOT } from '../config/config.js';
import type { Logger } from '../shared/log.js';
import type { GatewayMetrics } from './metrics.js';
import type { HttpCall, RequestInfo } from './http.js';

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
 * The pages (GET / and GET /operator) and their assets (GET /web/*): other
 * methods get 405 and unknown assets a JSON 404, like every other route.
 */
export function staticFiles(metrics: GatewayMetrics, log: Logger, dir = WEB_DIR): { matches(path: string): boolean; serve(ex: HttpCall, info: RequestInfo): void } {
  let assets: Map<string, Asset>;
  try {
    assets = loadAssets(dir);
  } catch (err) {
    log.error({ err: err instanceof Error ? err.message : err, dir }, 'web pages folder unreadable: pages are not served');
    assets = new Map();
  }
  return {
    matches: (path) => PAGES[path] !== undefined || path.startsWith(WEB_PREFIX),
    serve: (ex, info) => {
      const page = PAGES[info.path];
      const name = info.path.slice(WEB_PREFIX.length);
      // Only flat names of files read at start-up: no path separators, no dot-files.
      const file = page ?? (/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(name) ? name : undefined);
      metrics.track(ex, info.method, page ? info.path : `${WEB_PREFIX}*`);
      const asset = file === undefined ? undefined : assets.get(file);
      if (info.method !== 'GET' && info.method !== 'HEAD') {
        return ex.json(405, { error: { code: 'method_not_allowed', message: `${info.path} takes GET` } }, { allow: 'GET' });
      }
      if (!asset) return ex.error('not_found', `no route ${info.path}`);
      ex.send(200, asset.type, asset.body, [['cache-control', 'no-cache'], ...SECURITY_HEADERS]);
    },
  };
}
