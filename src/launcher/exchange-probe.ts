import { joinGroup, type GroupAddr } from '../feed/multicast.js';

/**
 * Listens on the exchange's market-data group for a while: NDFEX sends at
 * least a heartbeat every 500 ms, so silence for longer means no exchange is
 * there and the launcher starts the built-in simulator instead. `addr` and
 * `iface`: the market-data group and interface (NDFEX_MD_ADDR, NDFEX_INTERFACE).
 */
export async function exchangeIsLive(addr: GroupAddr, iface: string, waitMs = 1200): Promise<boolean> {
  let heard = false;
  let wake!: () => void;
  const woke = new Promise<void>((r) => (wake = r));
  let receiver;
  try {
    receiver = await joinGroup(addr, iface, () => {
      heard = true;
      wake();
    });
  } catch (err) {
    // Held without SO_REUSEPORT sharing for this Node: the exchange's own consumers are there, so is the exchange.
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') return true;
    throw err;
  }
  const timer = setTimeout(wake, waitMs);
  await woke;
  clearTimeout(timer);
  await receiver.close();
  return heard;
}
