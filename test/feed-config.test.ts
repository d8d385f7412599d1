import { describe, expect, it } from 'vitest';
import { loadBridgeConfig } from '../src/config/feed.js';

describe('feed bridge config', () => {
  it('has the exchange defaults and needs NATS_URL', () => {
    expect(() => loadBridgeConfig({})).toThrow(/NATS_URL is required/);
    expect(loadBridgeConfig({ NATS_URL: 'nats://127.0.0.1:4222' })).toEqual({
      natsUrl: 'nats://127.0.0.1:4222',
      clearing: { group: '239.0.0.2', port: 12346 },
      marketData: { group: '239.0.0.1', port: 12345 },
      snapshot: { group: '239.0.0.3', port: 12345 },
      iface: '127.0.0.1',
      sessionName: '',
      restartPolicy: 'reset',
      sources: [],
      statusIntervalMs: 1000,
      maxInFlight: 512,
      verdictWindowMs: 5000,
      logLevel: 'info',
      role: 'bridge',
    });
  });

  it('NDFEX_SOURCE: the exchange host\'s addresses, or a one-line error', () => {
    expect(loadBridgeConfig({ NATS_URL: 'nats://x:1', NDFEX_SOURCE: '127.0.0.1, 10.0.0.5' }).sources).toEqual(['127.0.0.1', '10.0.0.5']);
    expect(() => loadBridgeConfig({ NATS_URL: 'nats://x:1', NDFEX_SOURCE: 'exchange-host' })).toThrow(/NDFEX_SOURCE/);
  });

  it('takes overrides from the environment, empty ones count as unset', () => {
    const c = loadBridgeConfig({
      NATS_URL: 'nats://x:1',
      NDFEX_CLEARING_ADDR: '239.1.2.3:4000',
      NDFEX_MD_ADDR: '',
      NDFEX_INTERFACE: '10.0.0.5',
      NDFEX_SESSION: 'day2',
      NDFEX_RESTART_POLICY: 'keep',
    });
    expect(c).toMatchObject({ clearing: { group: '239.1.2.3', port: 4000 }, marketData: { group: '239.0.0.1', port: 12345 }, iface: '10.0.0.5', sessionName: 'day2', restartPolicy: 'keep' });
  });

  it('names the bad setting', () => {
    expect(() => loadBridgeConfig({ NATS_URL: 'n', NDFEX_CLEARING_ADDR: '239.0.0.2' })).toThrow(/not an IPv4 group:port[\s\S]*NDFEX_CLEARING_ADDR/);
    expect(() => loadBridgeConfig({ NATS_URL: 'n', NDFEX_RESTART_POLICY: 'sometimes' })).toThrow(/NDFEX_RESTART_POLICY/);
    expect(() => loadBridgeConfig({ NATS_URL: 'n', NDFEX_INTERFACE: 'eth0' })).toThrow(/NDFEX_INTERFACE/);
    expect(() => loadBridgeConfig({ NATS_URL: 'n', NDFEX_FEED_ROLE: 'spare' })).toThrow(/NDFEX_FEED_ROLE/);
    expect(loadBridgeConfig({ NATS_URL: 'n', NDFEX_FEED_ROLE: 'standby' }).role).toBe('standby');
  });
});
