import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { SNAPSHOT_STREAM } from '../proto/streams.js';
import { localNatsUrl, natsUrlFile } from '../src/config/config.js';
import { SnapshotStore } from '../src/engine/snapshot-store.js';
import { ensureFillStream, openBucket, streamExists } from '../src/shared/streams.js';
import { jetstreamManager } from '@nats-io/jetstream';
import { FILL_STREAM } from '../proto/subjects.js';
import { freePort, startNatsServer, type NatsServer } from '../src/launcher/nats-server.js';
import { tempDir, testConfig } from './helpers/system.js';
import { BBO_BUCKET } from '../proto/marketdata.js';
import { seedBooks } from '../src/pricing/service.js';
import { createLogger } from '../src/shared/log.js';

/**
 * "Not there" is decided by its own answer (JetStream API code, ENOENT), never
 * by catching everything (issue 21): an error of another kind (a refused
 * permission, a timeout, an unreadable file) is thrown, not taken for "none".
 */
describe('errors decided by type', () => {
  const dir = tempDir();
  let server: NatsServer;
  let admin: NatsConnection;
  let limited: NatsConnection;
  let noinfo: NatsConnection;
  let nobbo: NatsConnection;

  beforeAll(async () => {
    // A user who may do everything but read single messages of the snapshot stream.
    const conf = join(dir.path, 'nats.conf');
    writeFileSync(
      conf,
      `authorization {
  users = [
    { user: admin, password: adminpass }
    { user: nobbo, password: nobbopass, permissions: { publish: { allow: [">"], deny: ["$JS.API.>"] }, subscribe: { allow: [">"] } } }
    { user: noinfo, password: noinfopass, permissions: { publish: { allow: [">"], deny: ["$JS.API.STREAM.INFO.${FILL_STREAM}"] }, subscribe: { allow: [">"] } } }
    { user: limited, password: limitedpass, permissions: { publish: { allow: [">"], deny: ["$JS.API.STREAM.MSG.GET.${SNAPSHOT_STREAM}", "$JS.API.DIRECT.GET.${SNAPSHOT_STREAM}", "$JS.API.DIRECT.GET.${SNAPSHOT_STREAM}.>"] }, subscribe: { allow: [">"] } } }
  ]
}
`,
    );
    server = await startNatsServer({ port: await freePort(), storeDir: join(dir.path, 'nats'), configFile: conf });
    admin = await connect({ servers: server.url, user: 'admin', pass: 'adminpass', noAsyncTraces: true });
    limited = await connect({ servers: server.url, user: 'limited', pass: 'limitedpass', noAsyncTraces: true, timeout: 2000 });
    noinfo = await connect({ servers: server.url, user: 'noinfo', pass: 'noinfopass', noAsyncTraces: true, timeout: 2000 });
    nobbo = await connect({ servers: server.url, user: 'nobbo', pass: 'nobbopass', noAsyncTraces: true, timeout: 2000 });
  });
  afterAll(async () => {
    await limited?.close();
    await noinfo?.close();
    await nobbo?.close();
    await admin?.close();
    await server?.stop();
    dir.remove();
  });

  it('a snapshot that cannot be read is an error, not "no snapshot" (which would replay the whole journal without a word)', async () => {
    const store = await SnapshotStore.open(admin);
    expect(await store.load()).toBeNull(); // none yet: that is the "not found" answer
    const denied = await SnapshotStore.open(limited);
    await expect(denied.load()).rejects.toThrow();
  });

  it('a stream whose info cannot be read is an error, not a stream to create', async () => {
    await ensureFillStream(admin, 1);
    await expect(streamExists(await jetstreamManager(admin), 'NO_SUCH_STREAM')).resolves.toBe(false);
    await expect(ensureFillStream(noinfo, 1)).rejects.toThrow();
  });

  it('pricing: no stored books bucket is "the bridge has not run"; a bucket it cannot read is said as such', async () => {
    const lines: Array<{ level: number; msg: string; err?: string }> = [];
    const log = createLogger('test', 'info', { write: (l: string) => void lines.push(JSON.parse(l) as { level: number; msg: string }) });
    const ignore = () => {};
    const read = () => null;
    expect(await seedBooks(admin, read, ignore, log)).toBe(0);
    expect(lines.map((l) => [l.level, l.msg])).toEqual([[30, `no ${BBO_BUCKET} bucket to start from`]]);
    lines.length = 0;
    await openBucket(admin, BBO_BUCKET, 1);
    expect(await seedBooks(nobbo, read, ignore, log)).toBe(0);
    expect(lines.map((l) => [l.level, l.msg])).toEqual([[40, `cannot read the ${BBO_BUCKET} bucket: books start from live updates`]]);
    expect(lines[0]!.err).toMatch(/ermission/);
  });

  it('a recorded NATS URL that cannot be read is an error; only a missing one means the default', () => {
    const cfg = testConfig(dir.path);
    expect(localNatsUrl(cfg)).toBe(`nats://127.0.0.1:${cfg.nats.port}`);
    mkdirSync(natsUrlFile(cfg)); // a directory where the file should be: EISDIR
    expect(() => localNatsUrl(cfg)).toThrow(/EISDIR/);
  });
});
