#!/usr/bin/env node
/**
 * `npx ndfex-etf …` (package.json "bin"): brings dist/ up to date, then runs
 * the command line (src/cli/main.ts). After a fresh `npm ci` there is no dist/
 * yet, so the first call builds it (tsc -b, some seconds); later calls only
 * check that nothing changed (tsc -b's up-to-date check, well under a second).
 * Plain JavaScript, not compiled: it must run before anything is built.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const cli = join(root, 'dist/src/cli/main.js');
// TypeScript is a devDependency: a project set up with `npm ci --omit=dev` runs the dist/ it was given.
let tsc;
try {
  tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
} catch {
  tsc = null;
}
if (tsc) {
  // Compiler errors go to stderr (stdout is the command's, e.g. --json); whatever compiled still runs, as with `npm run etf`.
  const r = spawnSync(process.execPath, [tsc, '-b', root], { stdio: ['ignore', 2, 2] });
  if (r.status !== 0 && !existsSync(cli)) {
    process.stderr.write(`ndfex-etf: could not build ${cli} (tsc -b exited with ${r.status ?? r.signal})\n`);
    process.exit(1);
  }
} else if (!existsSync(cli)) {
  process.stderr.write(`ndfex-etf: ${cli} is missing and TypeScript is not installed: run npm ci, then npm run build\n`);
  process.exit(1);
}
await import(pathToFileURL(cli).href);
