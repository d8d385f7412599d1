/**
 * Throughput of the NDFEX simulator, each stage against the one before it,
 * measured in the same run:
 *   core     SimMarket.step(): market model + matching, no encoding
 *   encode   + packing into datagrams with proto/ndfex.ts
 *   wire     + multicast on loopback to a receiver that decodes every datagram
 *            (received/sent counts show the loss, if any, at that rate)
 *   paced    the simulator's own pacing at BENCH_PACED_RATE (default 20000/s) for 2 s
 * The receiver shares this process's event loop with the sender, as a bridge on
 * a busy 2-core host would share the CPU: its loss is a lower bound on headroom.
 * Run: npm run bench:sim   (BENCH_EVENTS, BENCH_PACED_RATE to change the load)
 */
import dgram from 'node:dgram';
import { decodeClearingDatagram, decodeMdDatagram } from '../proto/ndfex.js';
import { SimMarket } from '../src/sim/market.js';
import { packClearing, packMd } from '../src/sim/datagrams.js';
import { startSimulator } from '../src/sim/service.js';
import { createLogger } from '../src/shared/log.js';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 200_000);
const BATCH = 200;

function perSecond(events: number, ms: number): number {
  return Math.round((events / ms) * 1000);
}

function core(): number {
  const m = new SimMarket({ seed: 1, rosterIds: [1, 2, 3, 4] });
  const t0 = performance.now();
  for (let i = 0; i < EVENTS; i++) m.step();
  return perSecond(EVENTS, performance.now() - t0);
}

function encode(): { rate: number; bytesPerEvent: number } {
  const m = new SimMarket({ seed: 1, rosterIds: [1, 2, 3, 4] });
  let bytes = 0;
  const t0 = performance.now();
  for (let i = 0; i < EVENTS; i += BATCH) {
    const md = [];
    const clearing = [];
    for (let k = 0; k < BATCH; k++) {
      const out = m.step();
      md.push(...out.md);
      clearing.push(...out.clearing);
    }
    for (const b of packMd(md)) bytes += b.length;
    for (const b of packClearing(clearing)) bytes += b.length;
  }
  return { rate: perSecond(EVENTS, performance.now() - t0), bytesPerEvent: bytes / EVENTS };
}

/** Flat out when `paced` is 0, else the simulator's own timers at `paced` events/s for 2 s. */
async function wire(paced = 0): Promise<{ rate: number; mdSent: number; mdReceived: number; fillsSent: number; fillsReceived: number }> {
  const listen = async (group: string, onData: (b: Buffer) => void) => {
    const s = dgram.createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: 8 << 20 });
    await new Promise<void>((r) => s.bind(0, r));
    s.addMembership(group, '127.0.0.1');
    s.on('message', onData);
    return s;
  };
  let mdReceived = 0;
  let fillsReceived = 0;
  const mdSock = await listen('239.78.0.1', (b) => (mdReceived += decodeMdDatagram(b).messages.length));
  const clSock = await listen('239.78.0.2', (b) => (fillsReceived += decodeClearingDatagram(b).messages.length));
  const sim = await startSimulator({
    md: { group: '239.78.0.1', port: mdSock.address().port },
    clearing: { group: '239.78.0.2', port: clSock.address().port },
    snapshot: { group: '239.78.0.3', port: 9 },
    iface: '127.0.0.1',
    rate: paced || 1,
    seed: 1,
    rosterIds: [1, 2, 3, 4],
    log: createLogger('bench', 'silent'),
    manual: paced === 0,
  });
  const t0 = performance.now();
  if (paced === 0) for (let i = 0; i < EVENTS; i += BATCH) await sim.step(BATCH);
  else await new Promise((r) => setTimeout(r, 2000));
  const rate = perSecond(sim.stats().events, performance.now() - t0);
  // Let the receiver drain what the kernel already holds.
  await new Promise((r) => setTimeout(r, 300));
  const st = sim.stats();
  await sim.close();
  mdSock.close();
  clSock.close();
  return { rate, mdSent: st.mdMessages, mdReceived, fillsSent: st.fills, fillsReceived };
}

const base = core();
const enc = encode();
const w = await wire();
const PACED = Number(process.env.BENCH_PACED_RATE ?? 20_000);
const p = await wire(PACED);
console.log(`simulator, ${EVENTS} events, batches of ${BATCH}`);
console.log(`  core    ${base.toLocaleString()} events/s  (baseline)`);
console.log(`  encode  ${enc.rate.toLocaleString()} events/s  ${(enc.rate / base).toFixed(2)}x core, ${enc.bytesPerEvent.toFixed(1)} bytes/event`);
console.log(`  wire    ${w.rate.toLocaleString()} events/s  ${(w.rate / base).toFixed(2)}x core`);
console.log(`          md messages received ${w.mdReceived}/${w.mdSent} (${((w.mdReceived / w.mdSent) * 100).toFixed(1)}%), fills ${w.fillsReceived}/${w.fillsSent}`);
console.log(`  paced   ${p.rate.toLocaleString()} events/s asked ${PACED.toLocaleString()}/s`);
console.log(`          md messages received ${p.mdReceived}/${p.mdSent} (${((p.mdReceived / p.mdSent) * 100).toFixed(1)}%), fills ${p.fillsReceived}/${p.fillsSent}`);
