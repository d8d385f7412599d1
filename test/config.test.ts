import { describe, expect, it } from 'vitest';
import { parseAccounts } from '../src/config/accounts.js';
import { buildInstruments, loadBaskets } from '../src/config/baskets.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { MULTI_BASKETS, tempDir, testConfig } from './helpers/system.js';
import { ConfigError, engineShardsFile, loadConfig, localEngineShards, localNatsUrl, natsUrlFile } from '../src/config/config.js';
import { loadBridgeConfig } from '../src/config/feed.js';
import { simSettingsFromEnv } from '../src/config/sim.js';

const undyOnly = loadBaskets(undefined);

describe('accounts file', () => {
  it('reads the exchange roster format and the ETF engine format, mixed, with comments', () => {
    const accounts = parseAccounts(
      '# roster\n1 group1 9RD1ijyY\n\n2 group2 abcdefgh  # trailing comment\nteamx passx KNAN 10 13 -2\nteamy passy\n',
      'users.txt',
      undyOnly,
    );
    expect(accounts).toEqual([
      { clientId: 1, username: 'group1', password: '9RD1ijyY', opening: [], line: 2 },
      { clientId: 2, username: 'group2', password: 'abcdefgh', opening: [], line: 4 },
      { username: 'teamx', password: 'passx', opening: [[3, 10], [13, -2]], line: 5 },
      { username: 'teamy', password: 'passy', opening: [], line: 6 },
    ]);
  });

  it('stops with an error naming the file and line for every malformed line', () => {
    const bad: [string, RegExp][] = [
      ['1 onlytwo', /line 1: expected/],
      ['12 x y z', /line 1: expected/],
      ['ok okpass\n1 a b c d', /line 2: expected/],
      ['teamx passx NOPE 3', /line 1: unknown symbol NOPE/],
      ['teamx passx KNAN 1.5', /line 1: amount 1.5 is not an integer/],
      ['1 bad!name pass', /line 1: username/],
      ['1 a pass\n1 b pass', /line 2: client_id 1 already on line 1/],
      ['1 a pass\n2 a pass', /line 2: username a already on line 1/],
      ['0 a pass', /line 1: client_id 0/],
    ];
    for (const [text, err] of bad) {
      expect(() => parseAccounts(text, 'cfg/users.txt', undyOnly)).toThrow(err);
      expect(() => parseAccounts(text, 'cfg/users.txt', undyOnly)).toThrow(/accounts file cfg\/users.txt/);
    }
  });
});

describe('baskets file', () => {
  it('defaults to UNDY, one of each of symbols 3..12, held as symbol 13', () => {
    const undy = undyOnly.baskets.get('UNDY')!;
    expect(undy.symbol).toBe(13);
    expect(undy.components.map((c) => [c.symbol, c.weight])).toEqual([3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((s) => [s, 1]));
  });

  it('reads weighted baskets with their own symbol ids', () => {
    const multi = loadBaskets(MULTI_BASKETS);
    const tech = multi.baskets.get('TECH')!;
    expect(tech.symbol).toBe(101);
    expect(tech.components).toEqual([
      { symbol: 3, ticker: 'KNAN', weight: 2 },
      { symbol: 4, ticker: 'STED', weight: 1 },
      { symbol: 5, ticker: 'FISH', weight: 3 },
    ]);
    expect(multi.tickerOf(101)).toBe('TECH');
    expect(multi.symbolOf('TECH')).toBe(101);
  });

  it('refuses baskets that would corrupt the journal or cannot be priced', () => {
    const bad: [unknown, RegExp][] = [
      [{ etfs: [{ name: 'NEW', components: { KNAN: 1 } }] }, /give it a "symbol" id/],
      [{ etfs: [{ name: 'NEW', symbol: 3, components: { STED: 1 } }] }, /already KNAN/],
      [{ etfs: [{ name: 'NEW', symbol: 100, components: { ZZZZ: 1 } }] }, /unknown component symbol ZZZZ/],
      [{ etfs: [{ name: 'NEW', symbol: 100, components: { NEW: 1 } }] }, /cannot contain itself/],
      [{ etfs: [{ name: 'NEW', symbol: 100, components: {} }] }, /no components/],
    ];
    for (const [def, err] of bad) expect(() => buildInstruments(def as never, 'b.json')).toThrow(err);
  });
});

describe('settings from the environment', () => {
  it('a bad value blames the variable that set it, in one line; a password is never repeated', () => {
    expect(() => loadConfig({ ENGINE_SHARDS: '0' })).toThrow(/^ENGINE_SHARDS="0": Too small: expected number to be >=1$/);
    expect(() => loadConfig({ MAX_AMOUNT: '-5' })).toThrow(/^MAX_AMOUNT="-5": Too small/);
    expect(() => loadConfig({ HTTP_PORT: '99999' })).toThrow(/^HTTP_PORT="99999": Too big/);
    expect(() => loadConfig({ ENGINE_SHARDS: '2', ENGINE_SHARD: '2' })).toThrow(/ENGINE_SHARDS="2", ENGINE_SHARD="2": engine\.shard must be below engine\.shards/);
    expect(() => loadConfig({ OPERATOR_PASSWORD: 'short' })).toThrow(/^OPERATOR_PASSWORD \(value hidden\): operator password must be at least 8 characters$/);
    expect(() => loadConfig({ LOG_FORMAT: 'xml' })).toThrow(/^LOG_FORMAT="xml": expected json or pretty/);
    expect(loadConfig({ LOG_FORMAT: 'JSON' }).http.port).toBeGreaterThan(0);
  });
});

describe('HTTP settings', () => {
  it('HTTP_SERVER picks the server (auto, uws, node) and refuses anything else; HTTP_ALLOWED_ORIGINS is a comma-separated list of URLs', () => {
    expect(loadConfig({}).http.server).toBeUndefined();
    for (const v of ['auto', 'uws', 'node'] as const) expect(loadConfig({ HTTP_SERVER: v }).http.server).toBe(v);
    expect(() => loadConfig({ HTTP_SERVER: 'front' })).toThrow(ConfigError);
    expect(loadConfig({ HTTP_ALLOWED_ORIGINS: 'https://a.example, http://b.example:8080' }).http.allowedOrigins).toEqual(['https://a.example', 'http://b.example:8080']);
    expect(() => loadConfig({ HTTP_ALLOWED_ORIGINS: 'not a url' })).toThrow(ConfigError);
  });
});

describe('the gateway\'s expectations', () => {
  it('EXPECT_PRICING is on or off (unset: off, pricing counted missing only once it has reported), nothing else', () => {
    expect(loadConfig({}).expectPricing).toBeUndefined();
    expect(loadConfig({ EXPECT_PRICING: 'on' }).expectPricing).toBe(true);
    expect(loadConfig({ EXPECT_PRICING: 'off' }).expectPricing).toBe(false);
    expect(() => loadConfig({ EXPECT_PRICING: 'yes' })).toThrow(/^EXPECT_PRICING="yes" must be on or off$/);
  });

  it('PRICING_START_GRACE_MS and PRICING_BAD_BBO_MS are whole numbers of ms (unset: 30 s and 3 s)', () => {
    expect(loadConfig({}).pricingStartGraceMs).toBeUndefined();
    expect(loadConfig({ PRICING_START_GRACE_MS: '60000' }).pricingStartGraceMs).toBe(60_000);
    expect(() => loadConfig({ PRICING_START_GRACE_MS: '30s' })).toThrow(/^PRICING_START_GRACE_MS="30s" is not a whole number$/);
    expect(loadConfig({ PRICING_BAD_BBO_MS: '500' }).pricingBadBboMs).toBe(500);
  });
});

describe('what the launcher recorded on DATA_DIR, for the operator tools', () => {
  it('a recorded NATS URL that is not one is an error naming the file; only a missing file means the default port', () => {
    const dir = tempDir();
    try {
      const cfg = testConfig(dir.path);
      expect(localNatsUrl(cfg)).toBe(`nats://127.0.0.1:${cfg.nats.port}`);
      writeFileSync(natsUrlFile(cfg), 'nats://127.0.0.1:4300,nats://127.0.0.1:4301\n');
      expect(localNatsUrl(cfg)).toBe('nats://127.0.0.1:4300,nats://127.0.0.1:4301');
      for (const bad of ['', '\n', 'garbage', '127.0.0.1:4300', 'nats://127.0.0.1:4300,']) {
        writeFileSync(natsUrlFile(cfg), bad);
        expect(() => localNatsUrl(cfg)).toThrow(ConfigError);
        expect(() => localNatsUrl(cfg)).toThrow(natsUrlFile(cfg));
      }
    } finally {
      dir.remove();
    }
  });

  it('a recorded engine-shards file that cannot be read or is no count is an error naming the file', () => {
    const dir = tempDir();
    try {
      const cfg = testConfig(dir.path);
      expect(localEngineShards(cfg)).toBe(1);
      writeFileSync(engineShardsFile(cfg), '3\n');
      expect(localEngineShards(cfg)).toBe(3);
      for (const bad of ['', 'three', '2.5', '0']) {
        writeFileSync(engineShardsFile(cfg), bad);
        expect(() => localEngineShards(cfg)).toThrow(ConfigError);
        expect(() => localEngineShards(cfg)).toThrow(engineShardsFile(cfg));
      }
      const other = testConfig(dir.path, { dataDir: `${dir.path}/other` });
      mkdirSync(engineShardsFile(other), { recursive: true }); // a directory where the file should be
      expect(() => localEngineShards(other)).toThrow(ConfigError);
      expect(() => localEngineShards(other)).toThrow(/EISDIR/);
    } finally {
      dir.remove();
    }
  });
});

describe('the feed bridge and the simulator', () => {
  it('take NATS_CREDS and NATS_REPLICAS, and the same feed addresses, from what their entry point passes', () => {
    const feed = loadBridgeConfig({ NATS_URL: 'nats://x:1', NATS_CREDS: '/run/feed.json', NATS_REPLICAS: '3', NDFEX_MD_ADDR: '239.1.2.3:5000' });
    expect([feed.natsCreds, feed.natsReplicas, feed.marketData]).toEqual(['/run/feed.json', 3, { group: '239.1.2.3', port: 5000 }]);
    expect(() => loadBridgeConfig({ NATS_URL: 'nats://x:1', NATS_REPLICAS: '9' })).toThrow(/NATS_REPLICAS/);
    expect(simSettingsFromEnv({ NDFEX_MD_ADDR: '239.1.2.3:5000' }).md).toEqual(feed.marketData);
    expect(() => simSettingsFromEnv({ NDFEX_INTERFACE: 'eth0' })).toThrow(/NDFEX_INTERFACE/);
    expect(() => simSettingsFromEnv({ NDFEX_SIM_RATE: '0' })).toThrow(/NDFEX_SIM_RATE/);
  });
});
