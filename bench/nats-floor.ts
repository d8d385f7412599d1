/**
 * The NATS floor under /create's latency: one Node process asking another
 * over a local nats-server (request/reply, 100-byte payloads), with nothing
 * else done on either side. Every /create crosses NATS at least twice (the
 * command batch and its answer, the journal write and its acknowledgement),
 * so its latency cannot be better than this on the same machine. Run by
 * bench/create.ts beside its HTTP ceiling; with NATS_ECHO_URL set, this file
 * is the answering process.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { freePort, startNatsServer } from '../src/launcher/nats-server.js';
import { spawnService } from './system.js';

export const ECHO_SUBJECT = 'bench.echo';

/** A process answering every request on ECHO_SUBJECT with its own payload (this file, run with NATS_ECHO_URL). */
export const spawnEcho = (natsUrl: string) => spawnService('bench/nats-floor.js', { ...process.env, NATS_ECHO_URL: natsUrl }, 'echo ready');

export interface Floor {
  rps: number;
  p50: number;
  p90: number;
  p99: number;
}

/** `concurrency` requests kept outstanding (as autocannon keeps one per connection), or `rate` a second offered on a 1 ms clock. */
export async function natsFloor(opts: { concurrency: number; seconds: number; rate?: number }): Promise<Floor> {
  const dir = mkdtempSync(join(tmpdir(), 'etf-floor-'));
  const nats = await startNatsServer({ port: await freePort(), storeDir: join(dir, 'nats') });
  const echo = await spawnEcho(nats.url);
  const nc = await connect({ servers: nats.url });
  try {
    const payload = new Uint8Array(100);
    const ask = async (into: number[] | null) => {
      const t = performance.now();
      await nc.request(ECHO_SUBJECT, payload, { timeout: 10_000 });
      into?.push(performance.now() - t);
    };
    for (let i = 0; i < 2_000; i++) await ask(null);
    const lat: number[] = [];
    const start = performance.now();
    const end = start + opts.seconds * 1000;
    if (opts.rate) {
      const rate = opts.rate;
      const inflight: Promise<void>[] = [];
      let sent = 0;
      await new Promise<void>((done) => {
        const tick = () => {
          const now = performance.now();
          for (const due = Math.floor(((now - start) * rate) / 1000); sent < due; sent++) inflight.push(ask(lat));
          if (now >= end) return done();
          setTimeout(tick, 1);
        };
        tick();
      });
      await Promise.all(inflight);
    } else {
      const worker = async () => {
        while (performance.now() < end) await ask(lat);
      };
      await Promise.all(Array.from({ length: opts.concurrency }, worker));
    }
    const elapsed = (performance.now() - start) / 1000;
    lat.sort((a, b) => a - b);
    const q = (p: number) => Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! * 10) / 10;
    return { rps: Math.round(lat.length / elapsed), p50: q(0.5), p90: q(0.9), p99: q(0.99) };
  } finally {
    await nc.close();
    await echo.stop();
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.env.NATS_ECHO_URL) {
  const nc = await connect({ servers: process.env.NATS_ECHO_URL });
  nc.subscribe(ECHO_SUBJECT, { callback: (_err, msg) => void msg.respond(msg.data) });
  await nc.flush();
  console.log('echo ready');
}
