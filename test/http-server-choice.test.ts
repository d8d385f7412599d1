import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../src/config/config.js';
import { startService } from '../src/shared/service-process.js';
import { uwsLoads } from './helpers/servers.js';
import { tempDir, testConfig, useTestNats, writeConfigFile } from './helpers/system.js';

/**
 * HTTP_SERVER on a Node where this package's uWebSockets.js build does not
 * load (issue 20): this Node, or else the Node 22 the feed bridge runs on
 * (scripts/ensure-feed-node.sh; the test setup installed it). The real
 * gateway process: `auto` says why and how to get uWS in one log line and
 * serves on node:http; `uws` stops at once with the reason.
 */
const node = uwsLoads ? execFileSync('bash', [join(PROJECT_ROOT, 'scripts/ensure-feed-node.sh')], { encoding: 'utf8' }).trim() : process.execPath;
const abi = execFileSync(node, ['-p', 'process.versions.modules'], { encoding: 'utf8' }).trim();
const binary = `uws_${process.platform}_${process.arch}_${abi}.node`;
const gatewayMain = join(PROJECT_ROOT, 'dist/src/gateway/main.js');

const dir = tempDir('etf-http-choice-');
afterAll(() => dir.remove());

describe(`HTTP_SERVER on a Node without a uWS build (${binary})`, () => {
  const f = useTestNats();

  it('auto: one log line naming the missing build and where to get one, then serves on node:http', async () => {
    const lines: Record<string, any>[] = [];
    // The ready message (IPC) may come before its log lines (stdout) are read: the listening line is the last of them.
    let heard!: (l: Record<string, any>) => void;
    const listeningLine = new Promise<Record<string, any>>((r) => (heard = r));
    const gateway = await startService({
      name: 'gateway',
      command: node,
      args: [gatewayMain],
      env: { ...process.env, HTTP_SERVER: 'auto', NATS_URL: f.nats.url, CONFIG_FILE: writeConfigFile(testConfig(dir.path)), LOG_FORMAT: 'json', LOG_LEVEL: 'info' },
      ready: 'message',
      onLine: (line) => {
        if (!line.startsWith('{')) return;
        const l = JSON.parse(line) as Record<string, any>;
        lines.push(l);
        if (l.msg === 'gateway listening') heard(l);
      },
      timeoutMs: 60_000,
    });
    try {
      const listening = await listeningLine;
      const fallback = lines.filter((l) => /uWebSockets\.js does not load/.test(l.msg));
      expect(fallback).toHaveLength(1);
      expect(fallback[0]!.level).toBe(40); // warn
      expect(fallback[0]!.reason).toContain(binary);
      expect(fallback[0]!.msg).toContain(binary);
      expect(fallback[0]!.msg).toContain('github.com/uNetworking/uWebSockets.js/releases');
      expect(listening.server).toBe('node');
      const health = await fetch(`http://127.0.0.1:${listening.port}/health`);
      expect(health.headers.get('content-type')).toBe('application/json');
      expect(await health.json()).toMatchObject({ nats: true });
    } finally {
      await gateway.stop();
    }
  }, 90_000);

  it('uws: the gateway stops at once with the reason and what to do (exit 2), before it connects to NATS', () => {
    const r = spawnSync(node, [gatewayMain], {
      env: { ...process.env, HTTP_SERVER: 'uws', NATS_URL: 'nats://127.0.0.1:1', CONFIG_FILE: writeConfigFile(testConfig(dir.path)), LOG_FORMAT: 'json' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    const out = r.stdout + r.stderr;
    expect(r.status).toBe(2);
    expect(out).toContain(binary);
    expect(out).toContain('HTTP_SERVER=node');
  }, 90_000);
});
