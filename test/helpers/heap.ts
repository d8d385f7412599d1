import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../../src/config/config.js';

/** Runs a heap fixture (test/fixtures, built) in its own Node with --expose-gc: old space's growth and what its items held, in bytes. */
export function heapFixture(file: string, ...args: string[]): { grew: number; held: number } {
  const r = spawnSync(process.execPath, ['--expose-gc', join(PROJECT_ROOT, 'dist/test/fixtures', file), ...args], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`${file} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { grew: number; held: number };
}
