import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { jetstreamManager } from '@nats-io/jetstream';
import { encode } from '../proto/codec.js';
import type { FeedProblem } from '../proto/feed.js';
import { bboSubject, FEED_ALERT_SUBJECT, FEED_STATUS_SUBJECT, PRICE_BUCKET, priceSubject, type Bbo, type EtfPrice, type FeedAlert, type FeedCounters, type FeedStatus, type StandbyStatus } from '../proto/marketdata.js';
import { PROJECT_ROOT, THROTTLE_DEFAULTS } from '../src/config/config.js';
import { browserMissing, launchBrowser } from './helpers/browser.js';
import { buy, quietLog, tempDir, testConfig, undyBasket, useSystem } from './helpers/system.js';
import { startPricing, type PricingHandle } from '../src/pricing/service.js';

const OPERATOR = { username: 'op', password: 'op-secret-pass' };
const missing = browserMissing();
if (missing) console.warn(`\n*** SKIPPED test/web.test.ts: ${missing} and scripts/ensure-chromium.sh could not install it ***\n`);

/** UPDATE_SCREENSHOTS=1 writes docs/team-page.png and docs/operator-page.png (the README's); otherwise they go to a temp dir. */
const shots = process.env.UPDATE_SCREENSHOTS ? { path: join(PROJECT_ROOT, 'docs'), remove: () => {} } : tempDir('etf-shots-');

const undyPrice = (nav: number): EtfPrice => ({
  etf: 'UNDY',
  symbol: 13,
  nav,
  create_cost: nav + 25,
  redeem_proceeds: nav - 25,
  etf_bid: nav + 30,
  etf_ask: nav + 40,
  premium: 35 / nav,
  create_edge: 5,
  redeem_edge: -65,
  ts: Date.now(),
});

const counters = (over: Partial<FeedCounters> = {}): FeedCounters => ({
  datagrams: 1200,
  messages: 3400,
  gaps: 0,
  missed_messages: 0,
  bad_datagrams: 0,
  restarts: 0,
  last_seq: 3400,
  ...over,
});

/** Resolves once `selector`'s text is `text` (the page renders from the stream or its refresh; nothing here sleeps). */
async function textBecomes(page: Page, selector: string, text: string | RegExp): Promise<void> {
  const pattern = typeof text === 'string' ? `^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$` : text.source;
  await page.waitForFunction(
    ([sel, src]) => {
      const t = document.querySelector(sel)?.textContent?.trim();
      return t !== undefined && new RegExp(src).test(t);
    },
    [selector, pattern] as const,
    { timeout: 15_000 },
  );
}

describe.skipIf(missing !== null)('web pages in a real Chromium', () => {
  const f = useSystem({ operator: OPERATOR, roster: '1 team1 team1pass\n2 team2 team2pass\n3 team3 team3pass\n' });
  let context: BrowserContext;
  let close: () => Promise<void>;
  const pageErrors: string[] = [];
  /** Started by the test of its problems; left running, or its silence would be a standing row in every later test. */
  let pricing: PricingHandle | undefined;
  let pricingDir: ReturnType<typeof tempDir> | undefined;

  beforeAll(async () => {
    mkdirSync(shots.path, { recursive: true });
    ({ context, close } = await launchBrowser());
    context.on('page', (p) => p.on('pageerror', (e) => pageErrors.push(e.message)));
  });
  afterAll(async () => {
    await close?.();
    await pricing?.close();
    pricingDir?.remove();
    shots.remove();
  });

  /** The operator page, signed in. */
  async function operatorPage() {
    const op = await context.newPage();
    await op.goto(`${f.sys.url}/operator`);
    await op.fill('#username', OPERATOR.username);
    await op.fill('#password', OPERATOR.password);
    await op.click('#signin-button');
    await op.waitForSelector('#board:not([hidden])');
    return op;
  }

  it('team page: a wrong password is refused on the page', async () => {
    const page = await context.newPage();
    await page.goto(`${f.sys.url}/`);
    await page.fill('#username', 'team1');
    await page.fill('#password', 'wrong-password');
    await page.click('#signin-button');
    await textBecomes(page, '#signin-error', 'Wrong username or password.');
    expect(await page.isVisible('#desk')).toBe(false);
    await page.close();
  });

  it('team page: signs in, holdings follow fills, prices stream, create from the form shows the answer, history lists it', async () => {
    const page = await context.newPage();
    await page.goto(`${f.sys.url}/`);
    await page.fill('#username', 'team1');
    await page.fill('#password', 'team1pass');
    await page.click('#signin-button');
    await textBecomes(page, '#live-text', 'live');
    await textBecomes(page, '#who-name', 'team1');
    await textBecomes(page, '#holdings tbody', /No positions yet/);

    // A fill arrives on the exchange position feed: the row appears without a reload.
    await buy(f.nc, 1, { ...undyBasket(3), 3: 5 });
    await textBecomes(page, '#holdings tr[data-ticker="KNAN"] .qty', '5');
    await textBecomes(page, '#holdings tr[data-ticker="BDIN"] .qty', '3');
    // 32 units bought at 100: the stream's cash.
    await textBecomes(page, '#cash', '-3,200');

    // A price from the pricing actor's subject reaches the table.
    await page.waitForSelector('#prices tr[data-etf="UNDY"]');
    f.nc.publish(priceSubject('UNDY'), encode(undyPrice(10_050)));
    await textBecomes(page, '#prices tr[data-etf="UNDY"] [data-field="nav"]', (10_050).toLocaleString('en-US'));
    await textBecomes(page, '#prices tr[data-etf="UNDY"] [data-field="create_cost"]', (10_075).toLocaleString('en-US'));
    await textBecomes(page, '#prices tr[data-etf="UNDY"] [data-field="premium"]', '+0.35%');

    // Create 2 from the form: the engine's answer, then the stream's delta, then the history row.
    await page.fill('#amount', '2');
    await page.click('#create-button');
    await page.waitForSelector('#answer[data-status="ok"]');
    expect(await page.textContent('#answer .headline')).toContain('Created 2 UNDY');
    expect(await page.textContent('#answer .deltas')).toContain('KNAN -2');
    await textBecomes(page, '#holdings tr[data-ticker="UNDY"] .qty', '2');
    await textBecomes(page, '#holdings tr[data-ticker="KNAN"] .qty', '3');
    await textBecomes(page, '#history tbody tr:first-child td:nth-child(6)', 'accepted');

    // More than the basket allows: the refusal and its shortfalls, state untouched.
    await page.fill('#amount', '4');
    await page.click('#create-button');
    await page.waitForSelector('#answer[data-status="error"]');
    expect(await page.textContent('#answer')).toContain('insufficient_holdings');
    expect(await page.textContent('#answer .shortfalls')).toContain('BDIN: have 1, need 4');
    await textBecomes(page, '#history tbody tr:first-child td:nth-child(6)', 'rejected');
    expect((await f.http.holdings('team1', 'team1pass')).body.holdings.UNDY).toBe(2);

    // Redeem one back.
    await page.fill('#amount', '1');
    await page.click('#redeem-button');
    await page.waitForSelector('#answer[data-status="ok"]');
    expect(await page.textContent('#answer .headline')).toContain('Redeemed 1 UNDY');
    await textBecomes(page, '#holdings tr[data-ticker="UNDY"] .qty', '1');

    await page.screenshot({ path: join(shots.path, 'team-page.png'), fullPage: true, animations: 'disabled' });
    expect(pageErrors).toEqual([]);
    await page.close();
  });

  it('operator page: refuses a wrong password, then shows every team, conversions, feed health and alerts, live', async () => {
    const page = await context.newPage();
    await page.goto(`${f.sys.url}/operator`);
    await page.fill('#username', OPERATOR.username);
    await page.fill('#password', 'not-the-password');
    await page.click('#signin-button');
    await textBecomes(page, '#signin-error', 'Wrong operator username or password.');

    await page.fill('#password', OPERATOR.password);
    await page.click('#signin-button');
    await page.waitForSelector('#board:not([hidden])');
    await textBecomes(page, '#t-accounts', '3');
    await textBecomes(page, '#positions tr[data-team="team1"] td[data-ticker="UNDY"]', '1');
    await textBecomes(page, '#conversions tbody tr:first-child td:nth-child(3)', 'team1');
    await textBecomes(page, '#conversions tbody tr:first-child td:nth-child(4)', 'redeem');
    await textBecomes(page, '#t-feed', 'silent');

    // Live: another team's fill, the bridge's status and an alert appear without a reload.
    await buy(f.nc, 2, { 3: 40, 4: 25 });
    await textBecomes(page, '#positions tr[data-team="team2"] td[data-ticker="KNAN"]', '40');
    const status: FeedStatus = { clearing: counters({ gaps: 2, missed_messages: 3 }), market_data: counters({ restarts: 1 }), ts: Date.now() };
    f.nc.publish(FEED_STATUS_SUBJECT, encode(status));
    const alert: FeedAlert = { kind: 'gap', feed: 'clearing', detail: 'expected seq 1041, received 1044: 3 messages lost', expected: 1041, received: 1044, ts: Date.now() };
    f.nc.publish(FEED_ALERT_SUBJECT, encode(alert));
    await textBecomes(page, '#feed tr[data-feed="clearing"] [data-field="gaps"]', '2');
    await textBecomes(page, '#feed tr[data-feed="market_data"] [data-field="restarts"]', '1');
    await textBecomes(page, '#t-feed', 'live');
    await textBecomes(page, '#feed tr[data-feed="standby"] [data-field="state"]', /^no standby bridge/);
    const standby: StandbyStatus = { role: 'standby', session: 1, sender: '127.0.0.1:4000', last_seq: 7, waiting: null, datagrams: 7, bad_datagrams: 0, published: 5, duplicates: 5, not_following: 0, other_sender: 0, not_after: 2, suspended: 0, conflicts: 0, gaps: 0, invalid: 0, ts: Date.now() };
    f.nc.publish(FEED_STATUS_SUBJECT, encode(standby));
    await textBecomes(page, '#feed tr[data-feed="standby"] [data-field="state"]', 'following session 1; 5 fills published');
    await textBecomes(page, '#feed tr[data-feed="clearing"] [data-field="gaps"]', '2');
    await textBecomes(page, '#alerts tbody tr:first-child td:nth-child(4)', alert.detail);
    // Cash per team (fills at 100 a unit): 65 units bought.
    await textBecomes(page, '#positions tr[data-team="team2"] [data-field="cash"]', '-6,500');

    // The instructor halts UNDY with a reason: teams are refused with it; then resumes.
    await page.selectOption('#halt-etf', 'UNDY');
    await page.fill('#halt-reason', 'class break');
    await page.click('#halt-button');
    await textBecomes(page, '#halts', new RegExp(`^Halted: UNDY \\(class break\\), by ${OPERATOR.username} at `));
    const refused = await f.http.create('team1', 'team1pass', 1);
    expect(refused.status).toBe(403);
    expect(refused.body.error.message).toBe('conversions of UNDY are halted by the operator: class break');
    await page.click('#resume-button');
    await textBecomes(page, '#halts', 'Conversions open.');

    await page.screenshot({ path: join(shots.path, 'operator-page.png'), fullPage: true, animations: 'disabled' });
    expect(pageErrors).toEqual([]);
    await page.close();
  });
  it('a standing feed problem: the team page says positions may be incomplete, the operator page lists it as an alert with its decision; once acknowledged, both say so no more', async () => {
    const problem: FeedProblem = {
      id: 'gap-clearing',
      kind: 'gap',
      feed: 'clearing',
      detail: 'clearing fills missed for good: 3 (latest gap: expected seq 2041, received 2044); positions may be incomplete',
      actions: ['ack'],
      count: 1,
      since: Date.now(),
      ts: Date.now(),
    };
    let mdDatagrams = 5000;
    const publishStatus = (problems: FeedProblem[]) =>
      f.nc.publish(FEED_STATUS_SUBJECT, encode({ clearing: counters({ gaps: 1, missed_messages: 3 }), market_data: counters({ datagrams: (mdDatagrams += 10) }), problems, ts: Date.now() } satisfies FeedStatus));
    publishStatus([problem]);

    const team = await context.newPage();
    await team.goto(`${f.sys.url}/`);
    await team.fill('#username', 'team3');
    await team.fill('#password', 'team3pass');
    await team.click('#signin-button');
    await textBecomes(team, '#incomplete', /your positions may be incomplete/);

    const op = await operatorPage();
    await textBecomes(op, '#alerts tbody tr.problem td:nth-child(4)', /^clearing fills missed for good: 3 .*ack$/);
    expect(await op.locator('#alerts button[data-problem="gap-clearing"][data-action="ack"]').count()).toBe(1);

    // Acknowledged: the bridge's next status has no problem left.
    publishStatus([]);
    await op.waitForFunction(() => !document.querySelector('#alerts tbody tr.problem'), undefined, { timeout: 15_000 });
    await team.waitForFunction(() => !/incomplete/.test(document.querySelector('#incomplete')?.textContent ?? ''), undefined, { timeout: 15_000 });
    expect(pageErrors).toEqual([]);
    await team.close();
    await op.close();
  });

  it('fills the fill stream does not store: the operator page lists them first, until they are stored', async () => {
    const publishStatus = (unstored?: FeedStatus['unstored']) =>
      f.nc.publish(FEED_STATUS_SUBJECT, encode({ clearing: counters({}), market_data: counters({}), ...(unstored ? { unstored } : {}), ts: Date.now() } satisfies FeedStatus));
    publishStatus({ fills: 4, oldest_ms: 7_000, last_error: 'maximum messages exceeded' });
    const op = await operatorPage();
    await textBecomes(op, '#alerts tbody tr.system td:nth-child(4)', /^4 fill\(s\), the oldest 7 s \(maximum messages exceeded\): no position moves until they are\.$/);
    publishStatus();
    await op.waitForFunction(() => !document.querySelector('#alerts tbody tr.system'), undefined, { timeout: 15_000 });
    expect(pageErrors).toEqual([]);
    await op.close();
  });

  it('a pricing service that cannot store prices: the operator page lists it first, until they are stored', async () => {
    pricingDir = tempDir();
    pricing = await startPricing(testConfig(pricingDir.path), f.nats.url, quietLog);
    const jsm = await jetstreamManager(f.nc);
    const stream = `KV_${PRICE_BUCKET}`;
    const { config } = await jsm.streams.info(stream);
    // No price fits (a quota on the bucket's stream), and the quotes below change UNDY's.
    await jsm.streams.update(stream, { ...config, max_msg_size: 16 });
    for (let symbol = 3; symbol <= 13; symbol++) f.nc.publish(bboSubject(symbol), encode({ symbol, bid: 990, bid_qty: 5, ask: 1010, ask_qty: 5, ts: 0, md_seq: 1 } satisfies Bbo));
    const op = await operatorPage();
    await textBecomes(op, '#alerts tbody tr.system td:nth-child(2)', 'pricing');
    await textBecomes(op, '#alerts tbody tr.system td:nth-child(3)', 'failing');
    await textBecomes(op, '#alerts tbody tr.system td:nth-child(4)', /^the pricing service has not stored an ETF price for \d+ s \(.*message size exceeds.*\): GET \/etfs and the WebSocket stream keep showing the last prices stored/);
    await jsm.streams.update(stream, config);
    await op.waitForFunction(() => !document.querySelector('#alerts tbody tr.system'), undefined, { timeout: 15_000 });
    expect(pageErrors).toEqual([]);
    await op.close();
  });

  it('a roster line the engine refused: the operator page lists it first, until the file is fixed', async () => {
    const file = join(f.dir.path, 'accounts.txt');
    const roster = '1 team1 team1pass\n2 team2 team2pass\n3 team3 team3pass\n';
    const read = (text: string) => {
      const reading = f.sys.engine.roster!.next();
      writeFileSync(file, text);
      return reading;
    };
    expect((await read(`${roster}4 team4\n`)).refused).toEqual([{ line: 4, reason: expect.stringMatching(/^expected/) }]);
    const op = await operatorPage();
    await textBecomes(op, '#alerts tbody tr:first-child td:nth-child(3)', 'line 4 refused');
    await textBecomes(op, '#alerts tbody tr.roster td:nth-child(4)', /^expected .*as if absent \(that team cannot sign in\) until the accounts file is fixed$/);
    expect((await read(roster)).refused).toBeUndefined();
    await op.waitForFunction(() => !document.querySelector('#alerts tbody tr.roster'), undefined, { timeout: 15_000 });
    expect(pageErrors).toEqual([]);
    await op.close();
  });
});

describe.skipIf(missing !== null)('the team page under the login throttle, in a real Chromium', () => {
  // Two failed sign-ins lock a host (every loopback address is one): the browser's too.
  const f = useSystem({
    roster: '1 team1 team1pass\n',
    throttle: { ...THROTTLE_DEFAULTS, enabled: true, loginFailuresPerAddress: { burst: 2, perMinute: 1 } },
  });
  let context: BrowserContext;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ context, close } = await launchBrowser());
  });
  afterAll(async () => close?.());

  it('says the sign-in was throttled and when to try again, not a wrong password nor nothing at all', async () => {
    for (let i = 0; i < 3; i++) await f.http.holdings(`nobody${i}`, 'a-wrong-guess');
    expect((await f.http.holdings('team1', 'team1pass')).status).toBe(429);
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${f.sys.url}/`);
    await page.fill('#username', 'team1');
    await page.fill('#password', 'team1pass');
    await page.click('#signin-button');
    // Before, the page reconnected every second, each refusal another attempt counted against the host, and said nothing.
    await textBecomes(page, '#signin-error', /^Too many sign-in attempts: try again in \d+ s\.$/);
    expect(await page.isVisible('#desk')).toBe(false);
    expect(await page.isEnabled('#signin-button')).toBe(true);
    expect(errors).toEqual([]);
    await page.close();
  });
});
