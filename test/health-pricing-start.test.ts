import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Config } from '../src/config/config.js';
import { freePort } from '../src/launcher/nats-server.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { startPricing, type PricingHandle } from '../src/pricing/service.js';
import { api, quietLog, startLeafNats, startSystem, startTestNats, tempDir, testConfig, until, type TestSystem } from './helpers/system.js';

/**
 * A pricing service whose start is slow (here JetStream does not answer it,
 * as while a cluster elects its leaders; or a busy machine) showed as one that
 * "has not reported", a problem on a gateway expecting it, 5 s after the
 * gateway's start, though nothing was wrong yet. It now reports `starting`
 * from its connection to NATS on; the gateway makes a problem of a start only
 * past its grace, of a service never heard past it, and of one heard and then
 * silent, starting or not.
 *
 * Pricing runs on a leaf node of the system's nats-server that keeps
 * JetStream out of the link: its status reaches the gateways, while the
 * engine and the gateways have their JetStream.
 */
let nats: Awaited<ReturnType<typeof startTestNats>>;
let dir: ReturnType<typeof tempDir>;
let cfg: Config;
let sys: TestSystem;
let leaf: { url: string; stop(): Promise<void> } | undefined;
let pricing: PricingHandle | undefined;
const gateways: GatewayHandle[] = [];

beforeAll(async () => {
  nats = await startTestNats(undefined, { leafnodes: true });
  dir = tempDir();
  cfg = testConfig(dir.path);
  sys = await startSystem(nats.url, cfg);
});

afterAll(async () => {
  await pricing?.close();
  for (const g of gateways) await g.close();
  await leaf?.stop();
  await sys?.close();
  await nats?.stop();
  nats?.remove();
  dir?.remove();
});

const health = async (url: string) => (await api(url).send('GET', '/health')).body;
const pricingProblems = (h: { problems?: string[] }) => (h.problems ?? []).filter((p) => /pricing/.test(p));
const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);

async function gateway(overrides: Partial<Config>): Promise<string> {
  const g = await startGateway({ ...cfg, expectPricing: true, ...overrides }, nats.url, quietLog);
  gateways.push(g);
  return `http://127.0.0.1:${g.port}`;
}

it('a start waiting for JetStream is "starting", a problem only past its grace or once silent, and gone once it is ready', async () => {
  // Told the system runs pricing: one with the default grace (30 s), one with none at all.
  const patient = await gateway({});
  const impatient = await gateway({ pricingStartGraceMs: 0 });

  // Never heard, past its grace: a problem, whose age says when the patient gateway too has waited longer than the 5 s it once allowed.
  const never = await until(
    async () => {
      const h = await health(impatient);
      return Number(/started (\d+) s ago/.exec(pricingProblems(h)[0] ?? '')?.[1]) >= 6 && h;
    },
    'pricing unheard for 6 s, on the gateway without a grace',
    15_000,
  );
  expect(pricingProblems(never)).toEqual([expect.stringMatching(/^the pricing service has not reported since this gateway started \d+ s ago: ETF prices .* are not being updated/)]);
  // Within its grace, not yet.
  const unheard = await health(patient);
  expect(unheard.pricing).toEqual({ live: false, age_ms: null });
  expect(pricingProblems(unheard)).toEqual([]);

  const leafPort = await freePort();
  leaf = await startLeafNats(nats.leafPort!, leafPort, null, dir.path);
  const starting = startPricing(cfg, leaf.url, quietLog);
  const outcome = starting.then(
    () => 'started',
    (err: unknown) => `failed: ${String(err)}`,
  );

  // Heard from its connection on, saying where its start is and what JetStream answers it.
  const heard = await Promise.race([
    until(async () => {
      const h = await health(patient);
      return h.pricing?.phase === 'starting' && h.pricing.start?.waiting && h;
    }, 'pricing starting, on /health'),
    outcome.then((o) => Promise.reject(new Error(`the start ended (${o}) before it was heard starting`))),
  ]);
  expect(heard.pricing).toMatchObject({ live: true, phase: 'starting', start: { step: 'opening the etf_prices bucket', waiting: expect.stringMatching(/^JetStreamNotEnabled/) } });
  expect(heard.pricing.restarts).toBeUndefined();

  // Past the 5 s after which a silent start was taken for a service not there: within its grace, still no problem.
  const slow = await until(
    async () => {
      const h = await health(patient);
      return h.pricing?.start?.for_ms > 5_000 && h;
    },
    'a start longer than 5 s',
    15_000,
  );
  expect(slow.pricing.live).toBe(true);
  expect(pricingProblems(slow)).toEqual([]);
  expect(metric(await fetch(`${patient}/metrics`).then((r) => r.text()), 'etf_pricing_starting_seconds')).toBeGreaterThan(5);
  // Past a grace, the start itself is the problem, saying where it is.
  expect(pricingProblems(await health(impatient))).toEqual([
    expect.stringMatching(/^the pricing service has been starting for \d+ s \(opening the etf_prices bucket, waiting for JetStream: JetStreamNotEnabled.*\): ETF prices .* until it is ready$/),
  ]);

  // Its NATS server gone: heard, then silent, is a problem within the grace too, saying where the start was.
  await leaf.stop();
  leaf = undefined;
  const silent = await until(
    async () => {
      const h = await health(patient);
      return pricingProblems(h).length > 0 && h;
    },
    'the silent start on the patient gateway',
    15_000,
  );
  expect(pricingProblems(silent)).toEqual([expect.stringMatching(/^the pricing service last reported \d+ s ago while starting \(opening the etf_prices bucket, waiting for JetStream: .*\): ETF prices .* are not being updated/)]);

  // Back, with JetStream of its own: the start goes on where it was, and is done.
  leaf = await startLeafNats(nats.leafPort!, leafPort, `${dir.path}/leaf-js`, dir.path);
  expect(await outcome).toBe('started');
  pricing = await starting;
  for (const url of [patient, impatient]) {
    const ready = await until(async () => {
      const h = await health(url);
      return h.pricing?.phase === 'ready' && pricingProblems(h).length === 0 && h;
    }, `pricing ready on ${url}`);
    expect(ready.pricing.live).toBe(true);
    expect(ready.pricing.start).toBeUndefined();
    // The same run all along: a start that waited is no restart.
    expect(ready.pricing.restarts).toBeUndefined();
  }
});
