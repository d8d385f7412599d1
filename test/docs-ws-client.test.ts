import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { encode } from '../proto/codec.js';
import { shardNames } from '../proto/shards.js';
import type { SignInChanges } from '../proto/engine.js';
import { PROJECT_ROOT } from '../src/config/config.js';
import { buy, useSystem } from './helpers/system.js';

/**
 * The TypeScript client docs/ws.md gives teams to paste, run as written
 * against the real gateway: it follows the holdings, and a close it must
 * survive (4001 `sign-in changed`, sent to every stream at each NATS
 * reconnect of the gateway) makes it sign in again and go on.
 */
const f = useSystem();
const dir = join(PROJECT_ROOT, '.runtime', 'docs-snippets');
const file = join(dir, 'ws-client.ts');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function snippet(): string {
  const doc = readFileSync(join(PROJECT_ROOT, 'docs/ws.md'), 'utf8');
  const from = doc.indexOf('```ts', doc.indexOf('### TypeScript client'));
  const to = doc.indexOf('```', from + 5);
  expect(from).toBeGreaterThan(0);
  return doc.slice(from + 5, to);
}

it('the pasteable client follows the holdings and signs in again after a sign-in change close', async () => {
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, snippet());
  const { followHoldings } = (await import(file)) as {
    followHoldings: (url: string, u: string, p: string, on: (h: Map<string, number>, seq: number) => void) => { stop(): void };
  };
  const seen: { seq: number; knan: number | undefined }[] = [];
  const waiters: Array<() => void> = [];
  const follower = followHoldings(`${f.sys.url.replace('http', 'ws')}/ws`, 'team1', 'team1pass', (h, seq) => {
    seen.push({ seq, knan: h.get('KNAN') });
    for (const w of waiters.splice(0)) w();
  });
  const next = (check: () => boolean) =>
    new Promise<void>((resolve) => {
      const look = () => (check() ? resolve() : waiters.push(look));
      look();
    });
  try {
    await next(() => seen.length > 0);
    // What the engine says when team1's roster password changes: every stream of team1 closes with 4001 'sign-in changed'.
    const closed = f.sys.gateway.signIns.stats.heard;
    f.nc.publish(shardNames(0, 1).signin, encode({ v: 1, usernames: ['team1'] } satisfies SignInChanges));
    await f.nc.flush();
    await new Promise<void>((resolve) => {
      const look = () => (f.sys.gateway.signIns.stats.heard > closed ? resolve() : setImmediate(look));
      look();
    });
    // Before, the snippet's close listener threw (the reason is a Buffer) and it never connected again: this never came.
    await buy(f.nc, 1, { 3: 5 });
    await next(() => seen.some((s) => s.knan === 5));
    expect(seen.at(-1)!.knan).toBe(5);
  } finally {
    follower.stop();
  }
});
