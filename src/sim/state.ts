import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError } from '../config/config.js';
import type { Logger } from '../shared/log.js';
import type { SimMarket, SimMarketState } from './market.js';

/** What the state file holds: the market, and whether the simulator stopped cleanly after writing it. */
export interface SimStateFile {
  market: SimMarketState;
  clean: boolean;
  savedAt: number;
  /** The UDP source port the session is sent from (absent in files written before it was kept). */
  port?: number;
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
export function writeSimState(path: string, market: SimMarketState, clean: boolean, port?: number): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, JSON.stringify({ market, clean, savedAt: Date.now(), ...(port ? { port } : {}) } satisfies SimStateFile));
  renameSync(tmp, path);
}

/** How often a running simulator saves its state: what a crash can lose. */
export const SAVE_EVERY_MS = 1000;

/** More seq numbers than one save interval can use at `rate` events a second (a step sends at most ~32 messages). */
const crashSeqMargin = (rate: number): number => Math.max(1000, Math.ceil((rate * 32 * 2 * SAVE_EVERY_MS) / 1000));

/**
 * The market's state kept in a file, so that a restart continues the same
 * exchange session instead of starting a new one (which would reset every
 * team's positions). No file: a new session each start.
 */
export class SimStateKeeper {
  /** The source port the session is sent from, kept with the market (SimFeeds.open). */
  private port: number | undefined;

  constructor(
    private readonly file: string | undefined,
    private readonly market: SimMarket,
    private readonly log: Logger,
  ) {}

  /** Continues the saved session, if any, and says which port it was sent from. */
  restore(rate: number): number | undefined {
    const saved = this.file ? readSimState(this.file) : null;
    if (saved) {
      const market = this.market;
      market.restoreState(saved.market);
      // Messages sent after the last save of a crashed run must never be reused with other content.
      const skipped = saved.clean ? 0 : crashSeqMargin(rate);
      market.skipSeqs(skipped);
      this.log.info({ stateFile: this.file, mdSeq: market.lastMdSeq, clearingSeq: market.lastClearingSeq, afterCrash: !saved.clean, skipped }, 'simulator continues its session');
    }
    return saved?.port;
  }

  /** Sending from `port`: kept with the session, and the file marked "running", so a crash before the next clean stop is known as one. */
  running(port: number): void {
    this.port = port;
    this.save(false);
  }

  readonly save = (clean: boolean): void => {
    if (!this.file) return;
    try {
      writeSimState(this.file, this.market.exportState(), clean, this.port);
    } catch (err) {
      this.log.warn({ err: (err as Error).message, stateFile: this.file }, 'simulator state not saved');
    }
  };
}
