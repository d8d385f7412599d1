import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { freePort, natsServerEnv, startNatsServer } from '../src/launcher/nats-server.js';
import { tempDir } from './helpers/system.js';

/** A running process's environment, from /proc. */
const environOf = (pid: number): Record<string, string> =>
  Object.fromEntries(
    readFileSync(`/proc/${pid}/environ`, 'utf8')
      .split('\0')
      .filter((kv) => kv.includes('='))
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );

describe('the embedded nats-server', () => {
  it('runs with one Go processor unless GOMAXPROCS says otherwise (its scheduler spun the cores the services need)', async () => {
    const dir = tempDir();
    const server = await startNatsServer({ port: await freePort(), storeDir: dir.path });
    try {
      expect(environOf(server.proc.pid!).GOMAXPROCS).toBe(process.env.GOMAXPROCS || '1');
    } finally {
      await server.stop();
      dir.remove();
    }
    expect(natsServerEnv({ PATH: '/bin' })).toEqual({ PATH: '/bin', GOMAXPROCS: '1' });
    expect(natsServerEnv({ GOMAXPROCS: '4' }).GOMAXPROCS).toBe('4');
    expect(natsServerEnv({ GOMAXPROCS: '' }).GOMAXPROCS).toBe('1');
  });
});
