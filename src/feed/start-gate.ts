import type { ClearingFeed } from './clearing.js';

/** How long fills wait at a start for market data to tell whether the exchange restarted meanwhile. */
const WAIT_MS = 2000;

/**
 * An exchange restart while no bridge listened shows first on market data: at
 * a start that resumes a saved session, clearing datagrams wait until market
 * data is heard (or not, for WAIT_MS), so the verdict sees the restart before
 * the fills of a session it would otherwise take for the old one's.
 */
export class StartGate {
  private timer: NodeJS.Timeout | undefined;
  private shut: boolean;

  constructor(
    private readonly clearing: Pick<ClearingFeed, 'hold' | 'open'>,
    /** Whether there is saved market-data progress to compare with (none: nothing to wait for). */
    resumes: boolean,
  ) {
    this.shut = resumes;
  }

  start(): void {
    if (!this.shut) return;
    this.clearing.hold();
    this.timer = setTimeout(this.open, WAIT_MS);
    this.timer.unref();
  }

  readonly open = (): void => {
    if (!this.shut) return;
    this.shut = false;
    clearTimeout(this.timer);
    this.clearing.open();
  };

  stop(): void {
    clearTimeout(this.timer);
  }
}
