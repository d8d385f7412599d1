const SNAPSHOT_EVERY_MS = 500;
const PACE_EVERY_MS = 5;
const QUIET_CHECK_MS = 100;
/** Most events one pacing turn runs, so a flood still lets timers and I/O through. */
const MAX_EVENTS_PER_TURN = 5000;

export interface PacedWork {
  step(n: number): void;
  snapshot(): void;
  save(): void;
  heartbeatIfQuiet(): void;
}

/** The simulator's clockwork: market events at `rate` a second, snapshot rounds, heartbeats on quiet feeds, state saves. */
export class SimPacer {
  private readonly timers: NodeJS.Timeout[] = [];
  private stopped = false;
  /** Pacing by elapsed time, not by timer count: timers drift, the event total must not. */
  private base = performance.now();
  private done = 0;

  constructor(
    private readonly rate: number,
    private readonly saveEveryMs: number,
    private readonly work: PacedWork,
  ) {}

  start(): void {
    this.base = performance.now();
    this.timers.push(setTimeout(this.pace, PACE_EVERY_MS));
    this.timers.push(setInterval(() => this.work.snapshot(), SNAPSHOT_EVERY_MS));
    this.timers.push(setInterval(() => this.work.save(), this.saveEveryMs));
    this.timers.push(setInterval(() => this.work.heartbeatIfQuiet(), QUIET_CHECK_MS));
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
  }

  private readonly pace = (): void => {
    if (this.stopped) return;
    const due = Math.floor(((performance.now() - this.base) / 1000) * this.rate) - this.done;
    if (due > this.rate) {
      // More than a second behind (a stalled host): start over rather than burst.
      this.base = performance.now();
      this.done = 0;
    } else if (due > 0) {
      const n = Math.min(due, MAX_EVENTS_PER_TURN);
      this.done += n;
      this.work.step(n);
    }
    this.timers[0] = setTimeout(this.pace, PACE_EVERY_MS);
  };
}
