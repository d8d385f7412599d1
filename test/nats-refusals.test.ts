import { afterAll, beforeAll, expect, it } from 'vitest';
import { join } from 'node:path';
import { encode } from '../proto/codec.js';
import { fillSubject } from '../proto/subjects.js';
import { prepareNatsAuth, type NatsAuth } from '../src/launcher/nats-auth.js';
import { freePort, startNatsServer, type NatsServer } from '../src/launcher/nats-server.js';
import { connectNats } from '../src/shared/nats.js';
import { createLogger } from '../src/shared/log.js';
import { provisionStreams } from '../src/shared/streams.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { startPricing } from '../src/pricing/service.js';
import { quietLog, tempDir, testConfig, until } from './helpers/system.js';

/**
 * A publish the server refuses (the role may not) throws nothing: without a
 * look at the connection's status it vanished. Each service says it, and the
 * gateway counts it on /metrics.
 */
let dir: ReturnType<typeof tempDir>;
let auth: NatsAuth;
let server: NatsServer;
let gateway: GatewayHandle;

beforeAll(async () => {
  dir = tempDir('etf-refusals-');
  auth = prepareNatsAuth(join(dir.path, 'nats-auth'));
  server = await startNatsServer({ port: await freePort(), storeDir: join(dir.path, 'nats'), configFile: auth.configFile });
  const op = await connectNats(server.url, 'test-operator', { waitForServer: false, role: 'operator', credsFile: auth.credsFile('operator') });
  await provisionStreams(op);
  await op.close();
  const cfg = testConfig(dir.path);
  gateway = await startGateway({ ...cfg, nats: { ...cfg.nats, creds: auth.credsFile('gateway') } }, server.url, quietLog);
});

afterAll(async () => {
  await gateway?.close();
  await server?.stop();
  dir?.remove();
});

/** A logger keeping its lines; `logged` resolves at the first line naming `subject`. */
function logLines(subject: string) {
  const lines: Record<string, unknown>[] = [];
  let heard!: () => void;
  const logged = new Promise<void>((r) => (heard = r));
  const log = createLogger('test', 'info', {
    write: (s: string) => {
      const line = JSON.parse(s) as Record<string, unknown>;
      lines.push(line);
      if (line.subject === subject) heard();
    },
  });
  return { lines, log, logged };
}

it('logs a publish the server refused, naming the subject', async () => {
  const { lines, log, logged } = logLines(fillSubject(1));
  const nc = await connectNats(server.url, 'test-gateway', { waitForServer: false, role: 'gateway', credsFile: auth.credsFile('gateway'), log });
  try {
    nc.publish(fillSubject(1), encode({ forged: true }));
    await nc.flush();
    await logged;
  } finally {
    await nc.close();
  }
  expect(lines).toContainEqual(expect.objectContaining({ level: 50, operation: 'publish', subject: fillSubject(1), times: 1, msg: expect.stringMatching(/refused/) }));
});

it('the pricing service logs a publish the server refused on its own connection', async () => {
  const { lines, log, logged } = logLines(fillSubject(3));
  const cfg = testConfig(dir.path);
  const pricing = await startPricing({ ...cfg, nats: { ...cfg.nats, creds: auth.credsFile('pricing') } }, server.url, log);
  try {
    pricing.nc.publish(fillSubject(3), encode({ forged: true }));
    await pricing.nc.flush();
    await logged;
  } finally {
    await pricing.close();
  }
  expect(lines).toContainEqual(expect.objectContaining({ level: 50, operation: 'publish', subject: fillSubject(3), times: 1, msg: expect.stringMatching(/refused/) }));
});

it('counts the gateway\'s own refused publishes on /metrics', async () => {
  const url = `http://127.0.0.1:${gateway.port}/metrics`;
  expect(await fetch(url).then((r) => r.text())).toMatch(/^etf_gateway_nats_refused_total 0$/m);
  gateway.nc.publish(fillSubject(2), encode({ forged: true }));
  await gateway.nc.flush();
  await until(async () => /^etf_gateway_nats_refused_total 1$/m.test(await fetch(url).then((r) => r.text())), 'the refusal counted');
});
