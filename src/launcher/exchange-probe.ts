import { joinGroup, parseGroupAddr } from '../feed/multicast.js';

/**
 * Listens on the exchange's market-data group for a while: NDFEX sends at
 * least a heartbeat every 500 ms, so silence for longer means no exchange is
 * there and the launcher starts the built-in simulator instead.
 */
export async function exchangeIsLive(env: NodeJS.ProcessEnv, waitMs = 1200): Promise<boolean> {
  const addr = parseGroupAddr(env.NDFEX_MD_ADDR || '239.0.0.1:12345');
  let heard = false;
  let wake!: () => void;
  const woke = new Promise<void>((r) => (wake = r));
  const receiver = await joinGroup(addr, env.NDFEX_INTERFACE || '127.0.0.1', () => {
    heard = true;
    wake();
  });
  const timer = setTimeout(wake, waitMs);
  await woke;
  clearTimeout(timer);
  await receiver.close();
  return heard;
}
