import { createSocket } from 'node:dgram';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { decode } from '../../proto/codec.js';
import { FILL_STREAM } from '../../proto/subjects.js';
import { encodeClearingDatagram, type ClearingMessage } from '../../proto/ndfex.js';
import { readStream } from '../../src/shared/stream-reader.js';
import { multicastSender, type GroupAddr } from '../../src/feed/multicast.js';
import type { BridgeOptions } from '../../src/feed/service.js';

/** A UDP port the OS just handed out (free right now). */
export async function udpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const rnd = () => 1 + Math.floor(Math.random() * 254);

/** Fresh groups and ports, so tests (and test files running side by side) never hear each other. */
export async function feedAddrs(): Promise<{ clearing: GroupAddr; marketData: GroupAddr; snapshot: GroupAddr }> {
  const [a, b] = [rnd(), rnd()];
  const mdPort = await udpPort();
  return {
    clearing: { group: `239.${a}.${b}.2`, port: await udpPort() },
    marketData: { group: `239.${a}.${b}.1`, port: mdPort },
    snapshot: { group: `239.${a}.${b}.3`, port: mdPort },
  };
}

export async function bridgeOpts(natsUrl: string, extra: Partial<BridgeOptions> = {}): Promise<BridgeOptions> {
  return { natsUrl, ...(await feedAddrs()), iface: '127.0.0.1', sessionName: '', restartPolicy: 'reset', statusIntervalMs: 100, ...extra };
}

export type Sender = Awaited<ReturnType<typeof multicastSender>>;

export const fillMsg = (seq: number, client_id: number, symbol: number, q: number, price = 100): ClearingMessage => ({
  type: 'fill',
  seq,
  client_id,
  symbol,
  quantity: Math.abs(q),
  price,
  side: q >= 0 ? 1 : 2,
});

/** Sends each group of clearing messages as one datagram. */
export async function sendClearing(sender: Sender, addr: GroupAddr, datagrams: ClearingMessage[][]): Promise<void> {
  for (const d of datagrams) await sender.send(addr, encodeClearingDatagram(d));
}

/** Every message of the fill stream, decoded, in stream order. */
export async function fillStream(nc: NatsConnection): Promise<Array<{ subject: string; seq: number; msgId: string | undefined; data: any }>> {
  const out: Array<{ subject: string; seq: number; msgId: string | undefined; data: any }> = [];
  const f = await readStream(nc, FILL_STREAM, 1, (m) => out.push({ subject: m.subject, seq: m.seq, msgId: m.headers?.get('Nats-Msg-Id'), data: decode(m.data) }), { follow: false });
  await f.caughtUp;
  await f.stop();
  return out;
}

/** Collects decoded messages of a subject; `next(pred)` resolves with the first (past or future) match. */
export function collect<T>(nc: NatsConnection, subject: string) {
  const seen: T[] = [];
  let waiters: Array<{ pred: (m: T) => boolean; resolve: (m: T) => void }> = [];
  const sub: Subscription = nc.subscribe(subject, {
    callback: (_err, msg) => {
      const m = decode<T>(msg.data);
      seen.push(m);
      waiters = waiters.filter((w) => (w.pred(m) ? (w.resolve(m), false) : true));
    },
  });
  return {
    seen,
    next(pred: (m: T) => boolean, timeoutMs = 10_000): Promise<T> {
      const hit = seen.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise<T>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no matching message on ${subject} within ${timeoutMs} ms`)), timeoutMs);
        waiters.push({ pred, resolve: (m) => (clearTimeout(t), resolve(m)) });
      });
    },
    stop: () => sub.unsubscribe(),
    flushed: () => nc.flush(),
  };
}
