import { createServer } from 'node:net';

/** Whether a TCP port can be listened on exclusively right now. */
export function portIsFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}

/**
 * uWS happily shares a port with another process (SO_REUSEPORT), silently
 * splitting traffic between them: refuse instead.
 */
export async function assertPortFree(host: string, port: number, what: string): Promise<void> {
  if (port === 0) return;
  if (!(await portIsFree(host, port))) throw new Error(`port ${port} is already in use: is another ${what} running? (set HTTP_PORT / NATS_PORT)`);
}

/** A port the OS just handed out on `host` (free right now). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
