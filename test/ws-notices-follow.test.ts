import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { freePort, startNatsServer, type NatsServer } from '../src/launcher/nats-server.js';
import { NOTICES_SUBJECT_WILDCARD } from '../proto/subjects.js';
import type { ServerMessage } from '../proto/ws.js';
import { api, fillsFor, natsClient, publishFills, startSystem, tempDir, testConfig, undyBasket, until, type TestSystem } from './helpers/system.js';

/**
 * The gateway hears the engine's notices (several KB per group commit) only while a WebSocket stream follows an
 * account: a gateway serving REST alone had the server deliver every batch to it, to be dropped (issue 24). Read from
 * the server's own subscription list (its monitoring port), not from the gateway's word.
 */
describe('the gateway follows the engine notices only while a stream is open', () => {
  const dir = tempDir();
  let nats: NatsServer;
  let monitor: string;
  let sys: TestSystem;

  beforeAll(async () => {
    const port = await freePort();
    const conf = join(dir.path, 'monitor.conf');
    writeFileSync(conf, `http_port: ${port}\n`);
    monitor = `http://127.0.0.1:${port}`;
    nats = await startNatsServer({ port: await freePort(), storeDir: join(dir.path, 'nats'), configFile: conf });
    sys = await startSystem(nats.url, testConfig(dir.path));
    const nc = await natsClient(nats.url);
    await publishFills(nc, fillsFor(1, undyBasket(10)));
    await nc.close();
  });

  afterAll(async () => {
    await sys?.close();
    await nats?.stop();
    dir.remove();
  });

  /** The subjects the gateway's connection is subscribed to, as the server lists them. */
  async function gatewaySubjects(): Promise<string[]> {
    const r = (await (await fetch(`${monitor}/connz?subs=1`)).json()) as { connections: { name?: string; subscriptions_list?: string[] }[] };
    const gw = r.connections.filter((c) => c.name === 'etf-gateway');
    expect(gw).toHaveLength(1);
    return gw[0]!.subscriptions_list ?? [];
  }

  it('is not subscribed with no stream, is while one is open, and the stream gets every change', async () => {
    const http = api(sys.url);
    expect(await gatewaySubjects()).not.toContain(NOTICES_SUBJECT_WILDCARD);
    // REST works without it: the answer comes on the reply subject, not from a notice.
    expect((await http.create('team1', 'team1pass', 1, 'UNDY')).status).toBe(200);
    expect(await gatewaySubjects()).not.toContain(NOTICES_SUBJECT_WILDCARD);

    const ws = new WebSocket(`${sys.url.replace('http', 'ws')}/ws`);
    const messages: ServerMessage[] = [];
    ws.on('message', (d: Buffer) => messages.push(JSON.parse(d.toString('utf8')) as ServerMessage));
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ type: 'auth', username: 'team1', password: 'team1pass' }));
    const snapshot = await until(() => messages.find((m) => m.type === 'snapshot'), 'the stream\'s snapshot');
    expect(await gatewaySubjects()).toContain(NOTICES_SUBJECT_WILDCARD);

    // The first change after the snapshot arrives as a delta: subscribed before the snapshot was asked for.
    expect((await http.create('team1', 'team1pass', 1, 'UNDY')).status).toBe(200);
    const delta = await until(() => messages.find((m) => m.type === 'delta'), 'a delta for the create');
    expect(delta).toMatchObject({ seq: (snapshot as { seq: number }).seq + 1 });
    ws.close();
  });
});
