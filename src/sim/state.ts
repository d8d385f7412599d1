import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError } from '../config/config.js';
import type { SimMarketState } from './market.js';

/** What the state file holds: the market, and whether the simulator stopped cleanly after writing it. */
export interface SimStateFile {
  market: SimMarketState;
  clean: boolean;
  savedAt: number;
}

export function readSimState(path: string): SimStateFile | null {
  if (!existsSync(path)) return null;
  let s: SimStateFile | undefined;
  try {
    s = JSON.parse(readFileSync(path, 'utf8')) as SimStateFile;
  } catch {
    s = undefined;
  }
  if (!s?.market || s.market.v !== 1) throw new ConfigError(`simulator state ${path} is unreadable: delete it to start a new simulated exchange session`);
  return s;
}

/** Written whole or not at all (temp file + rename), so a crash mid-write leaves the previous state. */
export function writeSimState(path: string, market: SimMarketState, clean: boolean): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, JSON.stringify({ market, clean, savedAt: Date.now() } satisfies SimStateFile));
  renameSync(tmp, path);
}
