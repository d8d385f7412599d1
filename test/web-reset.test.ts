import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { encode } from '../proto/codec.js';
import { sessionMarkerMsgId } from '../proto/feed.js';
import type { SessionMarker } from '../proto/fill.js';
import type { ChartsBody } from '../proto/http.js';
import { BBO_BUCKET } from '../proto/marketdata.js';
import { FILL_STREAM, SESSION_SUBJECT } from '../proto/subjects.js';
import { openBucket } from '../src/shared/streams.js';
import { browserMissing, launchBrowser } from './helpers/browser.js';
import { awaitHoldings } from './helpers/events.js';
import { UNDY, bbo } from './helpers/prices.js';
import { buy, undyBasket, until, useSystem } from './helpers/system.js';

const RULES = { fees: { create: { fixed: 5, per_unit: 2 }, redeem: { fixed: 0, per_unit: 1 } } };
const missing = browserMissing();
if (missing) console.warn(`\n*** SKIPPED test/web-reset.test.ts: ${missing} ***\n`);

async function signIn(page: Page, url: string, username: string, password: string): Promise<void> {
  await page.goto(url);
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('#signin-button');
  await page.waitForSelector('#desk:not([hidden])');
}

/** Resolves once the P&L split reads `text` (the page renders from its stream and reads; nothing here sleeps). */
async function splitBecomes(page: Page, text: string): Promise<void> {
  try {
    await page.waitForFunction((want) => document.querySelector('#pnl-split')?.textContent === want, text, { timeout: 15_000 });
  } catch (err) {
    throw new Error(`the P&L split reads "${await page.textContent('#pnl-split')}", not "${text}"`, { cause: err });
  }
}

/**
 * An exchange reset starts the team's P&L again from 0: the page's split of it into what conversions earned at mid
 * and the rest counts only the conversions since, and says since when, on a page open as the reset comes and on one
 * opened after it.
 */
describe.skipIf(missing !== null)("the team page's P&L split across an exchange reset, in a real Chromium", () => {
  const f = useSystem({ chartSampleMs: 100, rules: RULES }, 1, { desk: true });
  const team1 = { basic: ['team1', 'team1pass'] as [string, string] };
  const card = async (requestId: string) => (await f.http.send('GET', `/requests/${requestId}`, team1)).body.scorecard;
  let context: BrowserContext;
  let close: () => Promise<void>;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    ({ context, close } = await launchBrowser());
    context.on('page', (p) => p.on('pageerror', (e) => pageErrors.push(e.message)));
  });
  afterAll(async () => {
    await close?.();
  });

  it('counts only the conversions after the last reset, from the reset heard live and from the stream\'s snapshot', async () => {
    // Marks: components 103..112 (a basket at 1075), UNDY 1100.
    const bbos = await openBucket(f.nc, BBO_BUCKET);
    for (let s = 3; s <= 12; s++) await bbos.put(String(s), encode(bbo(s, 100 + s)));
    await bbos.put(String(UNDY), encode(bbo(UNDY, 1100)));

    // The old session: a create of 2 at edge 2 × 1100 − 2 × 1075 − 9 = 41, its UNDY kept. P&L −2,009 + 2,200.
    await buy(f.nc, 1, undyBasket(2));
    await until(async () => {
      const b = (await f.http.send('GET', '/charts', { query: { team: 'team1' } })).body as ChartsBody;
      return b.teams[0]?.pnl.at(-1) === 150 || undefined;
    }, 'team1 marked at the desk');
    const before = await f.http.create('team1', 'team1pass', 2);
    expect(before.status).toBe(200);
    await until(async () => (await card(before.body.request_id))?.edge === 41 || undefined, "the old session's scorecard");

    const open = await context.newPage();
    await signIn(open, `${f.sys.url}/`, 'team1', 'team1pass');
    await splitBecomes(open, 'P&L +191 = conversions at mid +41 + the rest (trading, marks moving) +150 (the last 200 requests).');

    // The exchange restarts under the reset policy while the page is open: cash and positions back to 0.
    const applied = awaitHoldings(f.nc, 1, (c) => c.cause === 'session_reset', 'the reset');
    const marker: SessionMarker = { v: 1, kind: 'exchange_restart', reset: true, session: 2, detail: 'test: new exchange session', ts: Date.now() };
    await jetstream(f.nc).publish(SESSION_SUBJECT, encode(marker), { msgID: sessionMarkerMsgId(2) });
    await applied;
    const storedAt = (await (await jetstreamManager(f.nc)).streams.getMessage(FILL_STREAM, { last_by_subj: SESSION_SUBJECT }))!.time.getTime();
    // The reset's time as the page's clock shows it.
    const at = await open.evaluate((ts) => new Date(ts).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', hour12: false }), storedAt);
    // What the old create earned went with the reset: none of the P&L since is its.
    await splitBecomes(open, `P&L 0 = conversions at mid 0 + the rest (trading, marks moving) 0 (the last 200 requests, since the exchange restarted at ${at}).`);
    expect(await open.getAttribute(`#scorecard tr[data-request="${before.body.request_id}"]`, 'class')).toBe('before-reset');
    expect(await open.textContent('#scorecard-total-label')).toBe(`Total since the exchange restarted at ${at}`);

    // The new session: a basket bought, a create of 1 at edge 1100 − 1075 − 7 = 18, its UNDY sold. Cash −1,000 − 7 + 100, nothing held.
    await buy(f.nc, 1, undyBasket(1));
    const after = await f.http.create('team1', 'team1pass', 1);
    expect(after.status).toBe(200);
    await buy(f.nc, 1, { [UNDY]: -1 });
    await until(async () => (await card(after.body.request_id))?.legs_sold === 1 || undefined, "the new create's scorecard, its leg sold");
    expect((await card(after.body.request_id)).edge).toBe(18);
    const split = `P&L -907 = conversions at mid +18 + the rest (trading, marks moving) -925 (the last 200 requests, since the exchange restarted at ${at}).`;

    // A page opened now learns the reset from the stream's first snapshot.
    const fresh = await context.newPage();
    await signIn(fresh, `${f.sys.url}/`, 'team1', 'team1pass');
    await splitBecomes(fresh, split);

    // The open page reads its history again after a request of its own (a redeem refused: no UNDY), scorecards included.
    await open.fill('#amount', '1');
    await open.click('#redeem-button');
    await open.waitForSelector('#answer[data-status="error"]');
    await splitBecomes(open, split);
    expect(await open.textContent('#scorecard-total')).toBe('+18');

    expect(pageErrors).toEqual([]);
    await open.close();
    await fresh.close();
  });
});
