import { afterEach, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { Writable } from 'node:stream';
import { freePort, natsServerBinary, startNatsServer } from '../src/launcher/nats-server.js';
import { createLogger } from '../src/shared/log.js';
import { startEngine } from '../src/engine/service.js';
import { tempDir, testConfig } from './helpers/system.js';

/**
 * An engine that starts while JetStream does not answer yet (a cluster still
 * electing its leaders, a server coming up) waits for it, as it would for a
 * write: it does not fail its start (the process exiting, to be started again,
 * or under a harness not at all).
 */
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A nats-server without JetStream: every JetStream request of the engine goes unanswered. */
function serverWithoutJetStream(port: number): Promise<ChildProcess> {
  const child = spawn(natsServerBinary(), ['-a', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (b: Buffer) => b.toString().includes('Server is ready') && resolve(child));
    child.once('exit', (code) => reject(new Error(`nats-server exited with ${code}`)));
  });
}

it('waits for JetStream at its start instead of failing it, and starts once it answers', async () => {
  const dir = tempDir();
  cleanups.push(() => dir.remove());
  const port = await freePort();
  const bare = await serverWithoutJetStream(port);
  let bareUp = true;
  cleanups.push(() => bareUp && bare.kill('SIGKILL'));

  // The engine's log, read for its first "retrying": the event that says it is waiting, not failed.
  let retrying: () => void = () => {};
  const waited = new Promise<void>((r) => (retrying = r));
  const log = createLogger(
    'engine',
    'warn',
    new Writable({
      write(chunk: Buffer, _enc, done) {
        if (chunk.toString().includes('JetStream unavailable: retrying')) retrying();
        done();
      },
    }),
  );
  const started = startEngine(testConfig(dir.path), `nats://127.0.0.1:${port}`, log, (err) => {
    throw err;
  });
  const outcome = started.then(
    () => 'started',
    (err: unknown) => `failed: ${String(err)}`,
  );
  expect(await Promise.race([waited.then(() => 'waiting'), outcome])).toBe('waiting');

  // JetStream comes up (the same address, now with it): the engine goes on with its start.
  bareUp = false;
  bare.kill('SIGKILL');
  await new Promise((r) => bare.once('exit', r));
  const nats = await startNatsServer({ port, storeDir: dir.path + '/nats' });
  cleanups.push(() => nats.stop());
  expect(await outcome).toBe('started');
  const engine = await started;
  cleanups.push(() => engine.close());
  expect(engine.state.accounts.size).toBe(2);
});
