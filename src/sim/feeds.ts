import dgram from 'node:dgram';
import type { ClearingMessage, MdMessage } from '../../proto/ndfex.js';
import type { Logger } from '../shared/log.js';
import { packClearing, packMd } from './datagrams.js';
import type { SimMarket } from './market.js';
import type { Endpoint, SimSettings } from '../config/sim.js';

export interface SimulatorStats {
  events: number;
  mdMessages: number;
  mdDatagrams: number;
  fills: number;
  clearingDatagrams: number;
  snapshots: number;
  sendErrors: number;
}

/** A live feed quiet this long gets a heartbeat, as NDFEX sends one. */
const HEARTBEAT_AFTER_MS = 500;

/**
 * The market's messages onto the NDFEX multicast groups, from one UDP socket
 * (TTL 1: never off the host), counted in `stats`.
 */
export class SimFeeds {
  readonly stats: SimulatorStats = { events: 0, mdMessages: 0, mdDatagrams: 0, fills: 0, clearingDatagrams: 0, snapshots: 0, sendErrors: 0 };
  private lastMdSend = performance.now();
  private lastClearingSend = performance.now();
  private closed = false;

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly market: SimMarket,
    private readonly to: Pick<SimSettings, 'clearing' | 'md' | 'snapshot'>,
    private readonly log: Logger,
  ) {}

  /**
   * `port`: the source port of the session it continues (0: any). NDFEX sends
   * a session from one socket and the feed bridge holds another sender's fills
   * as a possible new exchange (src/feed/verdict.ts), so a simulator that
   * continues its session after a restart sends from the same port again.
   * reuseAddr: a crashed run's socket may not be closed yet.
   */
  static async open(market: SimMarket, settings: Pick<SimSettings, 'clearing' | 'md' | 'snapshot' | 'iface'>, log: Logger, port = 0): Promise<SimFeeds> {
    let socket: dgram.Socket;
    try {
      socket = await bound(port);
    } catch (err) {
      if (port === 0) throw err;
      log.warn({ err: (err as Error).message, port }, "simulator cannot send from its session's port again: the feed bridge will see another sender");
      socket = await bound(0);
    }
    socket.setMulticastInterface(settings.iface);
    socket.setMulticastLoopback(true);
    socket.setMulticastTTL(1);
    socket.on('error', (err) => log.warn({ err: err.message }, 'simulator socket error'));
    return new SimFeeds(socket, market, settings, log);
  }

  /** Runs `n` market events and resolves once their datagrams are handed to the kernel. */
  readonly step = (n = 1): Promise<void> => {
    const md: MdMessage[][] = [];
    const clearing: ClearingMessage[] = [];
    for (let i = 0; i < n; i++) {
      const out = this.market.step();
      for (const g of out.md) md.push(g);
      for (const f of out.clearing) clearing.push(f);
    }
    this.stats.events += n;
    return Promise.all([this.sendMd(md), this.sendClearing(clearing)]).then(() => {});
  };

  readonly snapshot = (): Promise<void> => {
    const bufs = packMd(
      this.market.snapshot().map((m) => [m]),
      'snapshot',
    );
    this.stats.snapshots++;
    return this.send(bufs, this.to.snapshot);
  };

  readonly heartbeat = (): Promise<void> => Promise.all([this.sendMd([[this.market.mdHeartbeat()]]), this.sendClearing([this.market.clearingHeartbeat()])]).then(() => {});

  /** A heartbeat on each live feed that has sent nothing for HEARTBEAT_AFTER_MS. */
  heartbeatIfQuiet(): void {
    const now = performance.now();
    if (now - this.lastMdSend >= HEARTBEAT_AFTER_MS) void this.sendMd([[this.market.mdHeartbeat()]]);
    if (now - this.lastClearingSend >= HEARTBEAT_AFTER_MS) void this.sendClearing([this.market.clearingHeartbeat()]);
  }

  /** From now on nothing is sent. */
  /** The source port it sends from. */
  port(): number {
    return this.socket.address().port;
  }

  async close(): Promise<void> {
    this.closed = true;
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
  }

  private sendMd(groups: MdMessage[][]): Promise<void> {
    if (groups.length === 0) return Promise.resolve();
    const bufs = packMd(groups);
    for (const g of groups) this.stats.mdMessages += g.length;
    this.stats.mdDatagrams += bufs.length;
    this.lastMdSend = performance.now();
    return this.send(bufs, this.to.md);
  }

  private sendClearing(msgs: ClearingMessage[]): Promise<void> {
    if (msgs.length === 0) return Promise.resolve();
    const bufs = packClearing(msgs);
    for (const m of msgs) if (m.type === 'fill') this.stats.fills++;
    this.stats.clearingDatagrams += bufs.length;
    this.lastClearingSend = performance.now();
    return this.send(bufs, this.to.clearing);
  }

  private send(bufs: Buffer[], to: Endpoint): Promise<void> {
    if (bufs.length === 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      let pending = bufs.length;
      for (const b of bufs) {
        this.socket.send(b, to.port, to.group, (err) => {
          if (err) {
            this.stats.sendErrors++;
            if (this.stats.sendErrors === 1 || this.stats.sendErrors % 1000 === 0) this.log.warn({ err: err.message, count: this.stats.sendErrors }, 'send failed');
          }
          if (--pending === 0) resolve();
        });
      }
    });
  }
}

/** A UDP socket bound to `port` (0: any), address reuse on. */
function bound(port: number): Promise<dgram.Socket> {
  const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  return new Promise((resolve, reject) => {
    socket.once('error', (err) => {
      socket.close();
      reject(err);
    });
    socket.bind(port, () => {
      socket.removeAllListeners('error');
      resolve(socket);
    });
  });
}
