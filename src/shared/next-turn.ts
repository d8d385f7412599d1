/**
 * Runs `run` once in the next event-loop turn (setImmediate) however often it
 * is scheduled during this one, so that everything that arrived in the turn
 * (every datagram or NATS message already read from the socket) goes out in
 * one batch: one NATS message, one journal write, one corked socket write.
 */
export class NextTurn {
  private scheduled = false;

  constructor(private readonly run: () => void) {}

  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.run();
    });
  }

  /** A run is scheduled and has not started. */
  get pending(): boolean {
    return this.scheduled;
  }
}
