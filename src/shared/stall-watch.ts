/**
 * The watchdog of a reader that can be lost without a word (on a cluster, a
 * consumer whose node died, which the client may wait on indefinitely): once
 * nothing has been heard for `stallMs`, `check` asks the server whether there
 * was anything to hear. One check runs at a time; `check` handles its own errors.
 */
export class StallWatch {
  private lastHeard = Date.now();
  private checking = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly stallMs: number,
    private readonly check: () => Promise<void>,
  ) {}

  start(): void {
    this.timer = setInterval(this.tick, this.stallMs / 3);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  heard(): void {
    this.lastHeard = Date.now();
  }

  /** Whether nothing has been heard for the stall time. */
  get quiet(): boolean {
    return Date.now() - this.lastHeard >= this.stallMs;
  }

  private readonly tick = (): void => {
    if (this.checking || !this.quiet) return;
    this.checking = true;
    void this.check().finally(() => (this.checking = false));
  };
}
