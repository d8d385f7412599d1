import { describe, expect, it } from 'vitest';
import { buy, undyBasket, useSystem } from './helpers/system.js';

describe.each([
  { shards: 1, gateways: 1 },
  // Accounts over two engine shards (team1 on shard 1), requests alternating between two gateways.
  { shards: 2, gateways: 2 },
])('$shards engine shard(s), $gateways gateway(s)', ({ shards, gateways }) => {
const f = useSystem(shards > 1 ? { engine: { shards } } : {}, gateways);

it('200 parallel creates of 1 unit against holdings for exactly 50: exactly 50 succeed, nothing goes negative', async () => {
  await buy(f.nc, 1, undyBasket(50));
  const http = f.http;
  const results = await Promise.all(Array.from({ length: 200 }, () => http.create('team1', 'team1pass', 1, 'UNDY')));
  const statuses = results.map((r) => r.status);
  expect(statuses.filter((s) => s === 200)).toHaveLength(50);
  expect(statuses.filter((s) => s === 400)).toHaveLength(150);
  for (const r of results) if (r.status === 400) expect(r.body.error.code).toBe('insufficient_holdings');

  const h = await http.holdings('team1', 'team1pass');
  expect(h.body.holdings).toEqual({ UNDY: 50 });
  for (const p of h.body.positions) expect(p.quantity).toBeGreaterThanOrEqual(0);
  // Every success saw a state no other success had already spent: their resulting UNDY counts are 1..50 exactly once.
  const undyAfter = results.filter((r) => r.status === 200).map((r) => r.body.holdings.UNDY as number);
  expect(new Set(undyAfter).size).toBe(50);
  expect(Math.max(...undyAfter)).toBe(50);
});
});
