/**
 * A baseline for benches: the project as it was at a git ref, built into a
 * temporary directory, so a bench can run the old code beside the new in one
 * process and report ratios measured in the same run.
 *
 *   const base = await buildBaseline(['src/engine/core.ts']);
 *   const core = await base.load<typeof import('../src/engine/core.js')>('src/engine/core.ts');
 *   ...
 *   base.remove();
 *
 * The ref is BENCH_BASELINE_REF, else the merge-base of HEAD with main (the
 * commit this branch started from).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PROJECT_ROOT } from '../src/config/config.js';

export interface Baseline {
  /** The ref asked for and the commit it named. */
  ref: string;
  commit: string;
  dir: string;
  /** Imports the baseline's build of a source file (path relative to the project root, .ts). */
  load<T>(sourcePath: string): Promise<T>;
  remove(): void;
}

const git = (...args: string[]): string => execFileSync('git', args, { cwd: PROJECT_ROOT, encoding: 'utf8' }).trim();

/** BENCH_BASELINE_REF, else the merge-base of HEAD with main (main's branch, else its remote). */
export function baselineRef(): string {
  const env = process.env.BENCH_BASELINE_REF;
  if (env) return env;
  for (const main of ['main', 'origin/main']) {
    try {
      return git('merge-base', 'HEAD', main);
    } catch {
      // try the next name
    }
  }
  throw new Error('no baseline: set BENCH_BASELINE_REF (no branch main to take the merge-base with)');
}

/**
 * Extracts `ref` (git archive: no worktree registered), links this project's
 * node_modules, and compiles only `entries` and what they import (everything when `entries` is empty).
 */
export async function buildBaseline(entries: string[], ref = baselineRef()): Promise<Baseline> {
  const commit = git('rev-parse', '--verify', `${ref}^{commit}`);
  const dir = mkdtempSync(join(tmpdir(), 'etf-baseline-'));
  const remove = () => rmSync(dir, { recursive: true, force: true });
  try {
    execFileSync('sh', ['-c', `git archive --format=tar "${commit}" | tar -x -C "${dir}"`], { cwd: PROJECT_ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    symlinkSync(realpathSync(join(PROJECT_ROOT, 'node_modules')), join(dir, 'node_modules'), 'dir');
    // Only the entries and their imports, unless none are named: the whole tree, for benches that run its services.
    const project = entries.length > 0 ? join(dir, 'tsconfig.baseline.json') : join(dir, 'tsconfig.json');
    if (entries.length > 0) writeFileSync(project, JSON.stringify({ extends: './tsconfig.json', include: [], files: entries }));
    execFileSync(join(PROJECT_ROOT, 'node_modules', '.bin', 'tsc'), ['-p', project], { cwd: dir, stdio: ['ignore', 'inherit', 'inherit'] });
  } catch (err) {
    remove();
    throw err;
  }
  return {
    ref,
    commit,
    dir,
    load: <T>(sourcePath: string) => import(pathToFileURL(join(dir, 'dist', sourcePath.replace(/\.ts$/, '.js'))).href) as Promise<T>,
    remove,
  };
}
