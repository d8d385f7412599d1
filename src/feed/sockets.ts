import type { FeedAlert, FeedCounters } from '../../proto/marketdata.js';
import type { SendAlert } from './alerts.js';
import { joinGroup, type GroupAddr, type Receiver } from './multicast.js';

type OnDatagram = (buf: Buffer, sender: string) => void;

export interface FeedSocketOptions {
  clearing: GroupAddr;
  marketData: GroupAddr;
  snapshot: GroupAddr;
  iface: string;
  /** Sender addresses the feeds are accepted from (NDFEX_SOURCE); none: any. */
  sources?: string[];
}

/** Where each feed's datagrams go, and the counters its foreign datagrams are counted in. */
export interface FeedInputs {
  clearing: { on: OnDatagram; counters: FeedCounters };
  marketData: { on: OnDatagram; counters: FeedCounters };
  snapshot: { on: OnDatagram; counters: FeedCounters };
}

/** The bridge's three multicast sockets, joined at start and left at stop. */
export class FeedSockets {
  private readonly receivers: Receiver[] = [];
  private readonly accepts: (sender: string) => boolean;

  constructor(
    private readonly opts: FeedSocketOptions,
    private readonly alert: SendAlert,
  ) {
    this.accepts = sourceFilter(opts.sources);
  }

  /** Joins one group after another; a join that fails leaves the ones before it joined, for stop() to leave. */
  async start(inputs: FeedInputs): Promise<void> {
    this.receivers.push(await joinGroup(this.opts.clearing, this.opts.iface, this.fromSource('clearing', inputs.clearing)));
    this.receivers.push(await joinGroup(this.opts.marketData, this.opts.iface, this.fromSource('market_data', inputs.marketData)));
    this.receivers.push(await joinGroup(this.opts.snapshot, this.opts.iface, this.fromSource('market_data', inputs.snapshot)));
  }

  async stop(): Promise<void> {
    await Promise.all(this.receivers.splice(0).map((r) => r.close()));
  }

  // Only the exchange's host may feed the bridge when NDFEX_SOURCE names it; anyone else's datagrams are counted and dropped.
  private fromSource(feed: FeedAlert['feed'], input: { on: OnDatagram; counters: FeedCounters }): OnDatagram {
    return (buf, sender) => {
      if (!this.accepts(sender)) {
        input.counters.foreign = (input.counters.foreign ?? 0) + 1;
        this.alert(feed, { kind: 'foreign', detail: `datagram from ${sender}, not an NDFEX_SOURCE address: ignored` });
        return;
      }
      input.on(buf, sender);
    };
  }
}

/** Whether a sender (`host:port`) is one of `sources` (no sources: every sender is). */
export function sourceFilter(sources: string[] | undefined): (sender: string) => boolean {
  const allowed = sources && sources.length > 0 ? new Set(sources) : null;
  return (sender) => !allowed || allowed.has(sender.slice(0, sender.lastIndexOf(':')));
}
