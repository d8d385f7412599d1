import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../src/config/config.js';
import { multicastSender } from '../src/feed/multicast.js';
import { FILL_STREAM } from '../proto/subjects.js';
import { killProcess, natsClient, startTestNats, until } from './helpers/system.js';
import { feedAddrs, feedProcessEnv, fillMsg, sendClearing, type Sender } from './helpers/feed.js';
import { jetstreamManager } from '@nats-io/jetstream';

/**
 * NDFEX's own market-data consumers (its snapshot service, its bots) bind the
 * feed ports with SO_REUSEPORT only. Linux lets two sockets share a port only
 * when both ask for the same sharing, so the bridge must bind with
 * SO_REUSEPORT too, whichever starts first. The stand-in for the exchange's
 * tool is a python3 socket with SO_REUSEPORT alone, as theirs are.
 */
const feedNode = spawnSync('bash', [join(PROJECT_ROOT, 'scripts/ensure-feed-node.sh')], { encoding: 'utf8' });
const node22 = feedNode.status === 0 ? feedNode.stdout.trim().split('\n').pop()! : null;
if (!node22) console.warn(`*** SKIPPED test/feed-reuseport.test.ts: no Node 22 for the feed bridge (${feedNode.stderr.trim().split('\n').pop()}) ***`);

/** A receiver like NDFEX's tools: SO_REUSEPORT only; prints "ready", then a line per datagram. */
function exchangeTool(group: string, port: number): ChildProcess & { received: number; ready: Promise<void> } {
  const py = `
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("${group}", ${port}))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton("${group}"), socket.inet_aton("127.0.0.1")))
print("ready", flush=True)
while True:
    s.recv(2048)
    print("datagram", flush=True)
`;
  const child = spawn('python3', ['-c', py], { stdio: ['ignore', 'pipe', 'inherit'] });
  const tool = Object.assign(child, { received: 0, ready: Promise.resolve() });
  tool.ready = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      if (l === 'ready') resolve();
      else if (l === 'datagram') tool.received++;
    });
    child.once('exit', (code) => reject(new Error(`the SO_REUSEPORT receiver exited with ${code} (it could not bind?)`)));
  });
  return tool;
}

describe.skipIf(!node22)('the feed bridge shares the feed ports with the exchange\'s SO_REUSEPORT consumers', () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let sender: Sender;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    nats = await startTestNats();
    sender = await multicastSender('127.0.0.1');
  });
  afterAll(async () => {
    for (const c of children) await killProcess(c, 'SIGKILL');
    await sender?.close();
    await nats?.stop();
    nats?.remove();
  });

  it('binds beside a consumer that was there first, and one that comes after it; all receive every datagram', async () => {
    const feeds = await feedAddrs();
    const before = exchangeTool(feeds.clearing.group, feeds.clearing.port);
    children.push(before);
    await before.ready;

    const bridge = spawn(node22!, [join(PROJECT_ROOT, 'dist/src/feed/main.js')], {
      env: {
        ...process.env,
        ...feedProcessEnv(nats.url, feeds),
        LOG_FORMAT: 'json',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(bridge);
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: bridge.stdout! }).on('line', (l) => l.includes('"feed bridge ready"') && resolve());
      bridge.once('exit', (code) => reject(new Error(`the bridge exited with ${code}`)));
    });

    const after = exchangeTool(feeds.clearing.group, feeds.clearing.port);
    children.push(after);
    await after.ready;

    await sendClearing(sender, feeds.clearing, Array.from({ length: 20 }, (_, i) => [fillMsg(i + 1, 1, 4, 1)]));
    const nc = await natsClient(nats.url);
    const jsm = await jetstreamManager(nc);
    await until(async () => (await jsm.streams.info(FILL_STREAM)).state.messages === 20, 'the bridge to store 20 fills');
    await until(() => before.received === 20 && after.received === 20, 'both SO_REUSEPORT consumers to receive 20 datagrams');
    expect(bridge.exitCode).toBeNull();
    await nc.close();
  });
});
