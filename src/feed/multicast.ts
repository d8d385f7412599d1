import { createSocket, type Socket, type SocketOptions } from 'node:dgram';
import { isIPv4 } from 'node:net';

export interface GroupAddr {
  group: string;
  port: number;
}

/** Parses `group:port` (e.g. 239.0.0.2:12346), refusing anything but an IPv4 multicast group. */
export function parseGroupAddr(s: string): GroupAddr {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(s.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || !isIPv4(m[1]!) || port < 1 || port > 65535) throw new Error(`"${s}" is not an IPv4 group:port, e.g. 239.0.0.1:12345`);
  const first = Number(m[1]!.split('.')[0]);
  if (first < 224 || first > 239) throw new Error(`${m[1]} is not a multicast group (224.0.0.0-239.255.255.255)`);
  return { group: m[1]!, port };
}

export interface Receiver {
  socket: Socket;
  close(): Promise<void>;
}

/**
 * Whether this Node binds UDP sockets with SO_REUSEPORT (`reusePort`, Node
 * 22.12+ and 23.1+). NDFEX's own consumers bind the feed ports with
 * SO_REUSEPORT only, and Linux lets two sockets share a port only when both set
 * the same option: without it this process and theirs exclude each other.
 */
export const UDP_REUSEPORT = (() => {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
})();

/**
 * Joins a multicast group on one interface and calls `onDatagram` for each
 * datagram with its sender (`address:port`). Bound to the group address itself
 * (not 0.0.0.0), so two groups on the same port (market data and snapshot
 * share 12345) stay apart; SO_REUSEADDR and, where Node offers it,
 * SO_REUSEPORT let several receivers on one host, the exchange's among them,
 * join the same group and port.
 */
export async function joinGroup(addr: GroupAddr, iface: string, onDatagram: (buf: Buffer, sender: string) => void, recvBufferBytes = 8 << 20): Promise<Receiver> {
  const socket = createSocket({ type: 'udp4', reuseAddr: true, ...(UDP_REUSEPORT ? { reusePort: true } : {}) } as SocketOptions);
  socket.on('message', (buf, rinfo) => onDatagram(buf, `${rinfo.address}:${rinfo.port}`));
  await new Promise<void>((resolve, reject) => {
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EADDRINUSE') return reject(err);
      const why = UDP_REUSEPORT
        ? 'another process holds it without SO_REUSEPORT'
        : `Node ${process.versions.node} cannot set SO_REUSEPORT, which NDFEX's own consumers use (run the bridge on Node 22.12+: npm start does)`;
      reject(Object.assign(new Error(`cannot bind ${addr.group}:${addr.port}: ${why}`), { code: err.code }));
    });
    socket.bind(addr.port, addr.group, () => {
      socket.removeAllListeners('error');
      resolve();
    });
  });
  socket.addMembership(addr.group, iface);
  try {
    // A burst larger than the default ~200 KB buffer would be dropped by the kernel; the OS may cap this.
    socket.setRecvBufferSize(recvBufferBytes);
  } catch {
    // The kernel may refuse the size (net.core.rmem_max): the default buffer still receives, only a burst may overflow it sooner.
  }
  return {
    socket,
    close: () =>
      new Promise<void>((resolve) => {
        try {
          socket.close(() => resolve());
        } catch (err) {
          // Closed already (the socket errored and Node closed it): that is the state wanted.
          if ((err as NodeJS.ErrnoException).code !== 'ERR_SOCKET_DGRAM_NOT_RUNNING') throw err;
          resolve();
        }
      }),
  };
}

/** A sender on `iface` that loops its datagrams back to local receivers (simulator, tests, bench). */
export async function multicastSender(iface = '127.0.0.1'): Promise<{ send(addr: GroupAddr, buf: Uint8Array): Promise<void>; port(): number; close(): Promise<void> }> {
  const socket = createSocket({ type: 'udp4', reuseAddr: true });
  await new Promise<void>((resolve) => socket.bind(0, iface, () => resolve()));
  socket.setMulticastInterface(iface);
  socket.setMulticastLoopback(true);
  socket.setMulticastTTL(1);
  return {
    send: (addr, buf) => new Promise<void>((resolve, reject) => socket.send(buf, addr.port, addr.group, (err) => (err ? reject(err) : resolve()))),
    port: () => socket.address().port,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
