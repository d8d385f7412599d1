import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { encode } from '../proto/codec.js';
import { BBO_BUCKET, priceSubject } from '../proto/marketdata.js';
import type { ChartsBody } from '../proto/http.js';
import { PROJECT_ROOT } from '../src/config/config.js';
import { openBucket } from '../src/shared/streams.js';
import { browserMissing, launchBrowser } from './helpers/browser.js';
import { buy, natsClient, quietLog, tempDir, undyBasket, until, useSystem } from './helpers/system.js';
import { DeskRecorder } from '../src/pricing/desk.js';
import { loadBaskets } from '../src/config/baskets.js';
import { UNDY, bbo, price } from './helpers/prices.js';

const OPERATOR = { username: 'op', password: 'op-secret-pass' };
const missing = browserMissing();
if (missing) console.warn(`\n*** SKIPPED test/web-charts.test.ts: ${missing} ***\n`);

/** UPDATE_SCREENSHOTS=1 writes the docs/ screenshots; otherwise they go to a temp dir. */
const shots = process.env.UPDATE_SCREENSHOTS ? { path: join(PROJECT_ROOT, 'docs'), remove: () => {} } : tempDir('etf-shots-');


async function signIn(page: Page, url: string, username: string, password: string): Promise<void> {
  await page.goto(url);
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('#signin-button');
}

/** Resolves once `selector`'s `data-<attr>` is `want` (a string) or at least `want` (a number): the pages render from their reads; nothing here sleeps. */
async function dataBecomes(page: Page, selector: string, attr: string, want: string | number): Promise<string> {
  const handle = await page.waitForFunction(
    ([sel, a, w]) => {
      const v = (document.querySelector(sel) as HTMLElement | null)?.dataset[a];
      if (v === undefined) return false;
      return (typeof w === 'number' ? Number(v) >= w : v === w) ? v : false;
    },
    [selector, attr, want] as const,
    { timeout: 15_000 },
  );
  return (await handle.jsonValue()) as string;
}

describe.skipIf(missing !== null)('charts on the pages, in a real Chromium', () => {
  const f = useSystem({ operator: OPERATOR, chartSampleMs: 100, roster: '1 team1 team1pass\n2 team2 team2pass\n3 team3 team3pass\n', rules: { fees: { create: { fixed: 5, per_unit: 1 }, redeem: { fixed: 5, per_unit: 1 } } } }, 1, { desk: true });
  let context: BrowserContext;
  let close: () => Promise<void>;
  const pageErrors: string[] = [];
  let before = 0;

  beforeAll(async () => {
    mkdirSync(shots.path, { recursive: true });
    ({ context, close } = await launchBrowser());
    context.on('page', (p) => p.on('pageerror', (e) => pageErrors.push(e.message)));

    // A session before anyone opens a page: marks, fills and prices that move.
    const bbos = await openBucket(f.nc, BBO_BUCKET);
    const setMarks = async (k: number) => {
      for (let s = 3; s <= 12; s++) await bbos.put(String(s), encode(bbo(s, 100 + s + Math.round(3 * Math.sin(k / 3 + s)))));
      await bbos.put(String(UNDY), encode(bbo(UNDY, 1080 + Math.round(12 * Math.sin(k / 4)))));
    };
    await setMarks(0);
    await buy(f.nc, 1, { ...undyBasket(6), 3: 8 });
    await buy(f.nc, 2, { 3: 30, 4: 20, [UNDY]: 2 });
    for (let k = 0; k < 24; k++) {
      await setMarks(k);
      const nav = 1075 + Math.round(8 * Math.sin(k / 5));
      const mid = 1080 + Math.round(12 * Math.sin(k / 4));
      f.nc.publish(priceSubject('UNDY'), encode(price(nav, mid)));
      // The next point carries this price: the gateway has heard it and sampled since.
      await until(async () => {
        const b = (await f.http.send('GET', '/charts', { query: { team: 'team1' } })).body as ChartsBody;
        return b.etfs.UNDY?.etf.at(-1) === mid && b.etfs.UNDY.nav.at(-1) === nav ? true : undefined;
      }, `point ${k}`);
    }
    before = Date.now();
  });
  afterAll(async () => {
    await close?.();
    shots.remove();
  });

  it('team page: draws the price/NAV and P&L charts with the session so far; a conversion made on the page is marked and scored', async () => {
    const page = await context.newPage();
    await signIn(page, `${f.sys.url}/`, 'team1', 'team1pass');
    await page.waitForSelector('#desk:not([hidden])');
    // Points from before the page was opened, drawn on canvases by uPlot.
    expect(Number(await dataBecomes(page, '#price-chart', 'points', 24))).toBeGreaterThanOrEqual(24);
    expect(Number(await page.getAttribute('#price-chart', 'data-first'))).toBeLessThan(before);
    expect(Number(await dataBecomes(page, '#pnl-chart', 'points', 24))).toBeGreaterThanOrEqual(24);
    expect(Number(await page.getAttribute('#pnl-chart', 'data-first'))).toBeLessThan(before);
    expect(await page.locator('#price-chart canvas').count()).toBe(1);
    expect(await page.locator('#pnl-chart canvas').count()).toBe(1);
    await dataBecomes(page, '#price-chart', 'markers', '0');

    // A dry run first: the answer says what would happen, nothing changes, nothing is marked.
    await page.check('#dry-run');
    await page.fill('#amount', '2');
    await page.click('#create-button');
    await page.waitForSelector('#answer[data-status="dry"]');
    expect(await page.textContent('#answer .headline')).toContain('Would create 2 UNDY');
    expect(await page.textContent('#answer .deltas')).toContain('fee 7');
    await page.uncheck('#dry-run');

    await page.click('#create-button');
    await page.waitForSelector('#answer[data-status="ok"]');
    expect(await page.textContent('#answer .headline')).toContain('Created 2 UNDY');
    // The conversion appears on the chart and in the scorecard, with its fee in the requests table.
    await dataBecomes(page, '#price-chart', 'markers', '1');
    await page.waitForSelector('#scorecard tbody tr[data-request] [data-field="edge"]');
    // The desk (pricing) writes scorecards a few at a time, and the gateway reads them from its stream.
    const card = await until(async () => {
      const h = await f.http.send('GET', '/history', { basic: ['team1', 'team1pass'], query: { limit: '1' } });
      return h.body.entries[0]?.scorecard as { fee: number; edge: number } | undefined;
    }, 'the conversion scored in /history');
    expect(card.fee).toBe(7);
    await page.waitForFunction((want) => document.querySelector('#scorecard tbody tr [data-field="edge"]')?.textContent === want, `${card.edge > 0 ? '+' : ''}${card.edge.toLocaleString('en-US')}`);
    expect(await page.textContent('#history tbody tr:first-child [data-field="fee"]')).toBe('7');
    // Nothing of the 2 UNDY sold yet; then one sold on the exchange: half the legs.
    expect(await page.textContent('#scorecard tbody tr:first-child [data-field="legs"]')).toBe('0%');
    await buy(f.nc, 1, { [UNDY]: -1 });
    await page.waitForFunction(() => document.querySelector('#scorecard tbody tr:first-child [data-field="legs"]')?.textContent === '50%');
    expect(await page.textContent('#pnl-split')).toMatch(/^P&L [-+][\d,.]+ = conversions at mid [-+][\d,.]+ \+ the rest \(trading, marks moving\) [-+][\d,.]+/);

    await page.screenshot({ path: join(shots.path, 'team-charts.png'), fullPage: true, animations: 'disabled' });

    // Phone width: nothing wider than the screen (tables scroll in their cards).
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForFunction(() => document.documentElement.scrollWidth <= 390);
    await page.screenshot({ path: join(shots.path, 'team-phone.png'), fullPage: true, animations: 'disabled' });
    await page.setViewportSize({ width: 1280, height: 820 });
    expect(pageErrors).toEqual([]);
    await page.close();
  });

  it('team page: a halt shows as a banner at once, and a refusal without shortfalls shows no "null"', async () => {
    const page = await context.newPage();
    await signIn(page, `${f.sys.url}/`, 'team1', 'team1pass');
    await page.waitForSelector('#desk:not([hidden])');
    expect(await page.isVisible('#halt-banner')).toBe(false);
    const auth = ['op', OPERATOR.password] as [string, string];
    expect((await f.http.send('POST', '/operator/api/halt', { basic: auth, json: { etf_name: 'UNDY', reason: 'class break' } })).status).toBe(200);
    // No conversion tried: the banner comes from the published halt.
    await page.waitForSelector('#halt-banner:not([hidden])');
    expect(await page.textContent('#halt-banner')).toContain('Conversions of UNDY are halted: class break');

    await page.fill('#amount', '1');
    await page.click('#redeem-button');
    await page.waitForSelector('#answer[data-status="error"]');
    const answer = (await page.textContent('#answer'))!;
    expect(answer).toContain('halted');
    expect(answer).not.toContain('null');
    expect(await page.locator('#answer .shortfalls').count()).toBe(0);

    expect((await f.http.send('POST', '/operator/api/resume', { basic: auth, json: {} })).status).toBe(200);
    await page.waitForSelector('#halt-banner', { state: 'hidden' });
    expect(pageErrors).toEqual([]);
    await page.close();
  });

  it("operator page and /board: every team's P&L over time and the leaderboard", async () => {
    const page = await context.newPage();
    await signIn(page, `${f.sys.url}/operator`, OPERATOR.username, OPERATOR.password);
    await page.waitForSelector('#board:not([hidden])');
    // team1 and team2 traded; team3 never did and has no line.
    await dataBecomes(page, '#pnl-chart', 'series', '2');
    expect(Number(await dataBecomes(page, '#pnl-chart', 'points', 24))).toBeGreaterThanOrEqual(24);
    expect(Number(await page.getAttribute('#pnl-chart', 'data-first'))).toBeLessThan(before);
    await page.waitForFunction(() => document.querySelectorAll('#leaderboard tbody tr[data-team]').length === 3);
    const board = (await f.http.send('GET', '/leaderboard')).body;
    expect(await page.textContent('#leaderboard tbody tr:first-child td:nth-child(2)')).toBe(board.teams[0].username);
    await page.screenshot({ path: join(shots.path, 'operator-charts.png'), fullPage: true, animations: 'disabled' });
    await page.close();

    const pub = await context.newPage();
    await pub.goto(`${f.sys.url}/board`);
    await dataBecomes(pub, '#pnl-chart', 'series', '2');
    await pub.waitForFunction(() => document.querySelectorAll('#leaderboard tbody tr[data-team]').length === 3);
    await pub.screenshot({ path: join(shots.path, 'board-page.png'), fullPage: true, animations: 'disabled' });
    expect(pageErrors).toEqual([]);
    await pub.close();
  });

  it('team page: a conversion made while the pricing service was stopped reads "not scored" once it is back, saying why, and the P&L split counts it', async () => {
    await buy(f.nc, 3, undyBasket(1));
    const page = await context.newPage();
    await signIn(page, `${f.sys.url}/`, 'team3', 'team3pass');
    await page.waitForSelector('#desk:not([hidden])');
    await f.sys.desk!.close();
    const created = await f.http.create('team3', 'team3pass', 1);
    expect(created.status).toBe(200);
    // Listed at once, not scored yet: nothing scores it while the pricing service is stopped.
    const row = `#scorecard tbody tr[data-request="${created.body.request_id}"]`;
    await page.waitForSelector(`${row} [data-field="edge"]`);
    expect(await page.textContent(`${row} [data-field="edge"]`)).toBe('—');
    // Started again: it finds the conversion in the journal, too late to score it, and the open page shows that without a reload.
    const nc = await natsClient(f.nats.url);
    const desk = await DeskRecorder.start(nc, loadBaskets(undefined), quietLog, { sampleMs: 100 });
    try {
      await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === 'not scored', `${row} [data-field="edge"]`);
      expect(await page.getAttribute(`${row} [data-field="edge"]`, 'title')).toMatch(/heard of it only after its moment/);
      expect(await page.textContent(`${row} [data-field="legs"]`)).toBe('0%');
      await page.waitForFunction(() => /; 1 conversion not scored: what it earned at mid is in the rest\)\.$/.test(document.querySelector('#pnl-split')?.textContent ?? ''));
      expect((await f.http.send('GET', `/requests/${created.body.request_id}`, { basic: ['team3', 'team3pass'] })).body.scorecard).toMatchObject({ unscored: 'missed', edge: null });
      expect(pageErrors).toEqual([]);
      await page.close();
    } finally {
      await desk.close();
      await nc.close();
    }
  });
});
