import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startSimulator, type SimulatorHandle } from '../src/sim/service.js';
import type { MdMessage } from '../proto/ndfex.js';
import { quietLog, tempDir } from './helpers/system.js';
import { feedAddrs } from './helpers/feed.js';

const dirs: ReturnType<typeof tempDir>[] = [];
const sims: SimulatorHandle[] = [];
afterAll(async () => {
  for (const s of sims) await s.close();
  for (const d of dirs) d.remove();
});

async function sim(stateFile: string, seed: number): Promise<SimulatorHandle> {
  const a = await feedAddrs();
  const s = await startSimulator({ clearing: a.clearing, md: a.marketData, snapshot: a.snapshot, iface: '127.0.0.1', rate: 20, seed, rosterIds: [1, 2], log: quietLog, manual: true, stateFile });
  sims.push(s);
  return s;
}

const timestamps = (groups: MdMessage[][]) => groups.flat().flatMap((m) => ('timestamp' in m ? [m.timestamp] : []));

describe('the simulator keeps its exchange session across its own restarts', () => {
  it('after a clean stop: the same seq numbers continue, timestamps keep rising, the books are the same', async () => {
    const d = tempDir('etf-sim-');
    dirs.push(d);
    const file = join(d.path, 'sim-state.json');
    const first = await sim(file, 1);
    let lastTs = 0n;
    for (let i = 0; i < 200; i++) for (const t of timestamps(first.market.step().md)) lastTs = t;
    const before = first.market.exportState();
    expect(before.mdSeq).toBeGreaterThan(100);
    expect(before.clearingSeq).toBeGreaterThan(0);
    const port = first.port();
    await first.close();
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ clean: true, port });

    // Another seed: a restored simulator ignores it and continues the saved run, from the same socket port (one session, one socket).
    const second = await sim(file, 999);
    expect(second.market.exportState()).toEqual(before);
    expect(second.port()).toBe(port);
    const out = second.market.step();
    const next = out.md.flat()[0]!;
    expect(next.seq).toBe(before.mdSeq + 1);
    expect(timestamps(out.md).every((t) => t > lastTs)).toBe(true);
    expect(second.market.mdHeartbeat().seq).toBe(before.mdSeq + out.md.flat().length + 1);
  });

  it('after a crash: it continues from the last saved state with seq numbers past anything it may have sent', async () => {
    const d = tempDir('etf-sim-');
    dirs.push(d);
    const file = join(d.path, 'sim-state.json');
    const crashed = await sim(file, 7);
    let sentMd = 0;
    let sentClearing = 0;
    for (let i = 0; i < 300; i++) {
      const out = crashed.market.step();
      for (const m of out.md.flat()) sentMd = m.seq;
      for (const f of out.clearing) sentClearing = f.seq;
    }
    // No clean stop: the file still says the run was going on.
    expect(JSON.parse(readFileSync(file, 'utf8')).clean).toBe(false);
    const resumed = await sim(file, 7);
    expect(resumed.market.mdHeartbeat().seq).toBeGreaterThan(sentMd);
    expect(resumed.market.clearingHeartbeat().seq).toBeGreaterThan(sentClearing);
  });

  it('without a state file every start is a new session, as before', async () => {
    const a = await feedAddrs();
    const s = await startSimulator({ clearing: a.clearing, md: a.marketData, snapshot: a.snapshot, iface: '127.0.0.1', rate: 20, seed: 3, rosterIds: [], log: quietLog, manual: true });
    sims.push(s);
    expect(s.market.mdHeartbeat().seq).toBe(1);
    expect(existsSync(join(process.cwd(), 'sim-state.json'))).toBe(false);
  });
});
