import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import type { DumpResult } from '../proto/engine.js';
import { SNAPSHOT_STREAM } from '../proto/streams.js';
import type { JournalEvent } from '../proto/journal.js';
import { ENGINE_ADMIN_SUBJECT, FILL_STREAM, JOURNAL_STREAM } from '../proto/subjects.js';
import { BASKET_BUCKET } from '../proto/marketdata.js';
import { PROJECT_ROOT } from '../src/config/config.js';
import { freePort, natsServerBinary } from '../src/launcher/nats-server.js';
import { startGateway } from '../src/gateway/server.js';
import { EngineClient } from '../src/shared/engine-client.js';
import { startBridge } from '../src/feed/service.js';
import { multicastSender } from '../src/feed/multicast.js';
import { consistencyCheck, rebuild } from '../src/engine/check.js';
import { loadBaskets } from '../src/config/baskets.js';
import { api, buy, expectedPositions, killProcess, quietLog, spawnEngine, tempDir, testConfig, until } from './helpers/system.js';
import { launcherEnv, runLauncher } from './helpers/launcher.js';
import { connectNats } from '../src/shared/nats.js';
import { retryTransient } from '../src/shared/js-retry.js';
import { BUCKETS } from '../src/shared/streams.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { bridgeOpts, fillMsg, sendClearing } from './helpers/feed.js';

/**
 * The system on a three-node NATS cluster (set up as the launcher's
 * NATS_CLUSTER=3 does it: every stream and bucket replicated three ways),
 * under a load of creates and redeems over HTTP and exchange fills through
 * the feed bridge. The node leading the journal is SIGKILLed mid-load; the
 * load goes on while a new leader is elected, then the node comes back and
 * catches up. Clients retry with the same idempotency key until they get a
 * definitive answer, as the README tells teams to.
 */
const TEAMS = 4;
const WORKERS = 6;
const dir = tempDir('etf-cluster-');
const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  // Whatever happened, the load stops before anything it uses is closed.
  loadRunning = false;
  aborted = true;
  await Promise.allSettled([fillLoop, ...workers]);
  for (const c of cleanups.reverse()) await c();
  dir.remove();
});

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
let loadRunning = false;
let aborted = false;
let fillLoop: Promise<void> = Promise.resolve();
let workers: Promise<void>[] = [];

it('loses no acknowledged operation, doubles none, and keeps answering when the node leading the journal, then the one holding the engine fill consumer, is SIGKILLed under load', async () => {
  const cluster: TestCluster = await startTestCluster(dir.path, 3);
  cleanups.push(() => cluster.stop());
  const roster = Array.from({ length: TEAMS }, (_, i) => `${i + 1} team${i + 1} team${i + 1}pass`).join('\n');
  const cfg = testConfig(dir.path, { roster, requestTimeoutMs: 2000, snapshotEvery: 300, operator: { username: 'instructor', password: 'instructorpass' } });
  const withCreds = (role: 'engine' | 'gateway') => ({ ...cfg, nats: { ...cfg.nats, creds: cluster.auth.credsFile(role) } });

  // The engine in its own process, as the launcher runs it; it must ride out the election, not restart.
  const engine = await spawnEngine(cluster.url, withCreds('engine'));
  let engineExits = 0;
  engine.once('exit', () => engineExits++);
  cleanups.push(() => killProcess(engine));
  const gateway = await startGateway(withCreds('gateway'), cluster.url, quietLog);
  cleanups.push(() => gateway.close());
  const http = api(`http://127.0.0.1:${gateway.port}`);
  const opts = await bridgeOpts(cluster.url, { natsCreds: cluster.auth.credsFile('feed'), ackTimeoutMs: 2000 });
  const bridge = await startBridge(opts, quietLog);
  cleanups.push(() => bridge.close());
  const sender = await multicastSender();
  cleanups.push(() => sender.close());
  const operator = await cluster.connect('operator');

  // Exchange fills, one a datagram: each team buys the basket's symbols in turn.
  loadRunning = true;
  const sentFills: { client_id: number; symbol: number; quantity: number }[] = [];
  fillLoop = (async () => {
    for (let k = 1; loadRunning; k++) {
      const f = { client_id: 1 + (k % TEAMS), symbol: 3 + (Math.floor(k / TEAMS) % 10), quantity: 20 };
      await sendClearing(sender, opts.clearing, [[fillMsg(k, f.client_id, f.symbol, f.quantity)]]);
      sentFills.push(f);
      await pause(5);
    }
  })();

  // Creates and redeems over HTTP, each retried with its key until definitive.
  const outcomes = new Map<string, number>(); // idempotency key → final HTTP status
  const answeredAt: number[] = []; // when each definitive answer arrived
  let unavailable = 0; // 503s and failed connections, retried
  workers = Array.from({ length: WORKERS }, async (_, w) => {
    const team = (w % TEAMS) + 1;
    for (let i = 0; loadRunning; i++) {
      const key = `w${w}-${i}`;
      const op = i % 3 === 2 ? '/redeem' : '/create';
      for (;;) {
        const status = await http.convertOnce(op, `team${team}`, `team${team}pass`, key);
        if (status === 200 || status === 400 || status === 409) {
          outcomes.set(key, status);
          answeredAt.push(Date.now());
          await pause(20); // a modest load: the machine also runs three servers
          break;
        }
        unavailable++;
        if (aborted) return;
        await pause(20);
      }
    }
  });

  const accepted = () => [...outcomes.values()].filter((s) => s === 200).length;
  await until(() => accepted() >= 60, '60 accepted conversions before the kill', 60_000);

  const jsm = await jetstreamManager(operator);
  // The test's own questions to JetStream meet the same elections as the system: asked again, not failed.
  const settled = <T>(what: string, ask: () => Promise<T>) => retryTransient(what, ask, { deadlineMs: 30_000 });
  const admin = new EngineClient(operator, 10_000, { admin: true });
  cleanups.push(() => admin.close());
  const engineFillSeq = async () => {
    const r = await admin.call({ op: 'dump' }).catch(() => null);
    return r?.ok ? r.result.fill_seq : -1;
  };

  /**
   * SIGKILLs node `victim` mid-load; the system must keep answering (150 more
   * definitive answers) and keep applying fills (100 past the stream's end at
   * the kill); then the node comes back and catches up with every stream
   * while the load goes on. Returns what it saw.
   */
  const killUnderLoad = async (victim: number) => {
    const victimName = cluster.plan.nodes[victim]!.name;
    const answersBefore = outcomes.size;
    const fillsAtKill = (await settled('fill stream', () => jsm.streams.info(FILL_STREAM))).state.last_seq;
    const killedAt = Date.now();
    await cluster.kill(victim);
    await until(() => outcomes.size >= answersBefore + 150, `150 more definitive answers after killing ${victimName}`, 120_000).catch(async (err: Error) => {
      // What a run that never recovered leaves to look at (one full-suite run timed out here, once).
      const journal = await jsm.streams.info(JOURNAL_STREAM).catch((e: unknown) => String(e));
      const state = {
        answeredSinceKill: outcomes.size - answersBefore,
        lastAnswerMsAgo: answeredAt.length > 0 ? Date.now() - answeredAt[answeredAt.length - 1]! : null,
        unavailable,
        killedMsAgo: Date.now() - killedAt,
        journal: typeof journal === 'string' ? journal : { last: journal.state.last_seq, leader: journal.cluster?.leader, replicas: journal.cluster?.replicas },
      };
      throw new Error(`${err.message}: ${JSON.stringify(state)}`);
    });
    await until(async () => (await engineFillSeq()) >= fillsAtKill + 100, `fills applied past the kill of ${victimName}`, 40_000).catch(async (err: Error) => {
      const consumers = await jsm.consumers.list(FILL_STREAM).next().catch(() => []);
      const state = {
        engineFillSeq: await engineFillSeq(),
        fillsAtKill,
        fillStreamLast: (await jsm.streams.info(FILL_STREAM).catch(() => null))?.state.last_seq,
        publisher: bridge.stats().publisher,
        consumers: consumers.map((c) => ({ name: c.name, cluster: c.cluster, delivered: c.delivered, pending: c.num_pending })),
      };
      throw new Error(`${err.message}: ${JSON.stringify(state)}`);
    });
    const answeredAfterKill = outcomes.size - answersBefore;
    await cluster.restart(victim);
    for (const stream of [JOURNAL_STREAM, FILL_STREAM]) {
      let last: unknown;
      await until(
        async () => {
          const info = await jsm.streams.info(stream).catch(() => null);
          last = info?.cluster;
          const replica = info?.cluster?.replicas?.find((r) => r.name === victimName);
          return info?.cluster?.leader === victimName || replica?.current === true;
        },
        `${victimName} current on ${stream}`,
        60_000,
      ).catch((err: Error) => {
        throw new Error(`${err.message}: ${JSON.stringify(last)}`);
      });
    }
    // The longest time without any definitive answer, from just before the kill to the node's return.
    const around = answeredAt.filter((t) => t >= killedAt - 1000);
    const silenceMs = around.slice(1).reduce((m, t, i) => Math.max(m, t - around[i]!), 0);
    return { killed: victimName, answeredAfterKill, silenceMs };
  };

  // 1. The node leading the journal.
  const journalLeader = await cluster.leaderOf(JOURNAL_STREAM);
  const first = await killUnderLoad(journalLeader);
  const newLeader = await cluster.leaderOf(JOURNAL_STREAM);
  expect(newLeader).not.toBe(journalLeader);
  // 2. The node holding the engine's consumer of the fill stream (its only consumer): nothing tells the
  //    engine that consumer is gone; it must notice by itself and read on from its own position.
  const fillConsumers = await settled('fill consumers', () => jsm.consumers.list(FILL_STREAM).next());
  const consumerNode = cluster.plan.nodes.findIndex((n) => n.name === fillConsumers[0]?.cluster?.leader);
  expect(consumerNode, JSON.stringify(fillConsumers.map((c) => c.cluster))).toBeGreaterThanOrEqual(0);
  const second = await killUnderLoad(consumerNode);

  loadRunning = false;
  await Promise.all([fillLoop, ...workers]);
  // Every fill the bridge heard is stored (it retries with the same msg id until acked), and the engine has applied it.
  await bridge.idle();
  expect(bridge.stats().status.clearing.gaps, 'datagrams lost before the bridge (not a cluster matter)').toBe(0);
  const fillsStored = (await settled('fill stream', () => jsm.streams.info(FILL_STREAM))).state.last_seq;
  const dump = await until(
    async () => {
      const r = await admin.call({ op: 'dump' });
      return r.ok && r.result.fill_seq >= fillsStored ? r.result : undefined;
    },
    'the engine to apply every stored fill',
    30_000,
  );

  // 1. Every acknowledged operation is in the journal exactly once.
  const { events, state: rebuilt } = await rebuild(operator, dump.journal_seq, 0, quietLog, loadBaskets(undefined));
  const byKey = new Map<string, JournalEvent[]>();
  for (const ev of events) {
    if ((ev.t === 'conversion' || ev.t === 'rejected') && 'key' in ev && ev.key) byKey.set(ev.key, [...(byKey.get(ev.key) ?? []), ev]);
  }
  const doubled = [...byKey].filter(([, evs]) => evs.length > 1).map(([k]) => k);
  let lost = 0;
  for (const [key, status] of outcomes) {
    const ev = byKey.get(key)?.[0];
    if (status === 200 && ev?.t !== 'conversion') lost++;
    if (status === 400 && ev?.t !== 'rejected') lost++;
  }
  const summary = {
    acknowledged: outcomes.size,
    accepted: accepted(),
    refused: [...outcomes.values()].filter((s) => s === 400).length,
    lost,
    doubled: doubled.length,
    retried503s: unavailable,
    fills: sentFills.length,
    journalLeaderKill: { ...first, newLeader: cluster.plan.nodes[newLeader]!.name },
    fillConsumerKill: second,
    snapshotsSaved: engine.logs.filter((l) => l.msg === 'snapshot saved').length,
    engineLogLines: engine.logs.length,
    fillRetries: bridge.stats().publisher.retries,
    // How long the engine's journal writes were retried, from its own log.
    journalRetriedMs: engine.logs.filter((l) => l.what === 'journal write' && typeof l.ms === 'number').map((l) => l.ms as number),
  };
  console.log(`cluster kill: ${JSON.stringify(summary)}`);
  if (process.env.CLUSTER_DEBUG) console.log(engine.logs.filter((l) => l.what !== 'journal write').map((l) => JSON.stringify(l).slice(0, 400)).join('\n'));
  expect(doubled).toEqual([]);
  expect(lost).toBe(0);
  expect(engineExits, 'the engine rode out the election without restarting').toBe(0);

  // 2. Positions are exactly the fills sent plus the journaled conversions.
  const expected = expectedPositions(sentFills, events.flatMap((ev) => (ev.t === 'conversion' ? [[ev.clientId, rebuilt.catalog.deltas(ev)] as const] : [])));
  for (let id = 1; id <= TEAMS; id++) {
    const h = await http.holdings(`team${id}`, `team${id}pass`);
    expect(h.status).toBe(200);
    const got = Object.fromEntries((h.body.positions as { symbol: number; quantity: number }[]).map((p) => [p.symbol, p.quantity]));
    expect(got, `team${id}`).toEqual(Object.fromEntries(expected.get(id) ?? []));
  }

  // 3. The consistency check agrees, in the library and as the operator's tool on the cluster's URL list.
  const report = await consistencyCheck(operator, dump as DumpResult, loadBaskets(undefined), quietLog);
  expect(report.mismatches).toEqual([]);
  expect(report.conservation).toEqual([]);
  expect(report.ok).toBe(true);
  const tool = spawn(process.execPath, [join(PROJECT_ROOT, 'dist/src/tools/check.js')], {
    env: { ...process.env, NATS_URL: cluster.url, NATS_CREDS: cluster.auth.credsFile('operator'), DATA_DIR: dir.path },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let toolOut = '';
  tool.stdout!.on('data', (b: Buffer) => (toolOut += b.toString()));
  tool.stderr!.on('data', (b: Buffer) => (toolOut += b.toString()));
  const code = await new Promise<number | null>((r) => tool.once('exit', r));
  expect(code, toolOut.slice(-2000)).toBe(0);
  expect(toolOut).toContain('consistent');

  // 4. Snapshots were written through the kills (every SNAPSHOT_EVERY events): an engine started
  //    now loads the last one, replays the journal after it, and has exactly the same state.
  // (One may still be on its way, retried through the second election.)
  await until(() => engine.logs.some((l) => l.msg === 'snapshot saved' || String(l.msg).startsWith('snapshot not saved')), 'a snapshot saved', 60_000);
  const saved = engine.logs.filter((l) => l.msg === 'snapshot saved').length;
  expect(engine.logs.filter((l) => String(l.msg).startsWith('snapshot not saved'))).toEqual([]);
  await killProcess(engine, 'SIGKILL');
  const again = await spawnEngine(cluster.url, withCreds('engine'));
  cleanups.push(() => killProcess(again));
  expect(again.ready.snapshot, `${saved} snapshots saved; the start said: ${JSON.stringify(again.startLog.filter((l) => /snapshot/.test(String(l.msg))))}`).not.toBeNull();
  const after = await admin.call({ op: 'dump' });
  if (!after.ok) throw new Error(after.error.message);
  expect(after.result.journal_seq).toBe(dump.journal_seq);
  expect(after.result.fill_seq).toBe(dump.fill_seq);
  expect(after.result.accounts).toEqual(dump.accounts);

  // 5. Published state still flows with the node holding the gateway's watch of the baskets bucket
  //    dead: a basket change reaches GET /etfs (the engine's acknowledged KV write, the watch).
  const watches = await settled('bucket consumers', () => jsm.consumers.list(`KV_${BASKET_BUCKET}`).next());
  const watchNode = cluster.plan.nodes.findIndex((n) => n.name === watches[0]?.cluster?.leader);
  expect(watchNode, JSON.stringify(watches.map((c) => c.cluster))).toBeGreaterThanOrEqual(0);
  await cluster.kill(watchNode);
  const set = await until(async () => {
    const r = await http.send('POST', '/operator/api/basket', { basic: ['instructor', 'instructorpass'], json: { etf_name: 'UNDY', components: { KNAN: 3 } } });
    return r.status === 200 ? r : undefined;
  }, 'the basket change accepted', 30_000);
  // (Asked again after a 503 while the journal had no leader: each accepted change is a version.)
  expect(set.body.baskets.UNDY.at(-1)).toMatchObject({ components: { KNAN: 3 } });
  await until(async () => {
    const etfs = (await http.send('GET', '/etfs')).body.etfs as { name: string; components: { ticker: string; weight: number }[] }[];
    const undy = etfs.find((e) => e.name === 'UNDY')!;
    return undy.components.length === 1 && undy.components[0]!.ticker === 'KNAN' && undy.components[0]!.weight === 3;
  }, 'GET /etfs to show the new basket', 20_000);
  await cluster.restart(watchNode);
}, 300_000);

it('npm start with NATS_CLUSTER=3: three nodes, every stream and bucket in 3 replicas, routes authenticated, a killed node restarted, a clean restart keeps holdings', async () => {
  const accounts = join(dir.path, 'launcher-accounts.txt');
  writeFileSync(accounts, '1 team1 team1pass\n2 team2 team2pass\n');
  const data = join(dir.path, 'launcher-data');
  const env = await launcherEnv(data, accounts, { NATS_CLUSTER: '3' });
  const http = api(`http://127.0.0.1:${env.HTTP_PORT}`);
  // A whole cluster starting elects its stream leaders before the engine can start (it waits up to 60 s for them): under
  // a full suite's load on two cores, that alone has taken most of a minute.
  const healthy = () => until(async () => (await http.send('GET', '/health').catch(() => null))?.body.engine === true, 'the system to be healthy', 120_000);
  let run = runLauncher(env);
  cleanups.push(() => killProcess(run.child, 'SIGINT'));
  await healthy();

  const urls = readFileSync(join(data, 'nats.url'), 'utf8').trim();
  expect(urls.split(',')).toHaveLength(3);
  const feed = await connectNats(urls, 'test-fills', { role: 'feed', credsFile: join(data, 'nats-auth/feed.json') });
  const operator = await connectNats(urls, 'test-operator', { role: 'operator', credsFile: join(data, 'nats-auth/operator.json') });
  cleanups.push(async () => {
    await feed.close();
    await operator.close();
  });
  const jsm = await jetstreamManager(operator);
  for (const stream of [JOURNAL_STREAM, FILL_STREAM, SNAPSHOT_STREAM, ...Object.keys(BUCKETS).map((b) => `KV_${b}`)]) {
    const info = await jsm.streams.info(stream);
    expect(info.config.num_replicas, stream).toBe(3);
    expect(info.cluster?.replicas, stream).toHaveLength(2);
  }
  // Every node takes the same users: an anonymous client is refused by each.
  for (const url of urls.split(',')) await expect(connect({ servers: url, reconnect: false })).rejects.toThrow(/Authorization Violation/);

  // Routes are authenticated: a server joining without the routes' credentials is refused (it could otherwise
  // carry anyone's messages into the cluster, engine commands included).
  const conf = readFileSync(join(data, 'nats-auth/etf-n1.conf'), 'utf8');
  const clusterListen = (JSON.parse(conf.slice(conf.indexOf('cluster: ') + 'cluster: '.length)) as { listen: string }).listen;
  const rogueConf = join(dir.path, 'rogue.conf');
  writeFileSync(rogueConf, `cluster: ${JSON.stringify({ name: 'etf', listen: '127.0.0.1:-1', routes: [`nats-route://${clusterListen}`] })}\n`);
  const rogue = spawn(natsServerBinary(), ['-c', rogueConf, '-a', '127.0.0.1', '-p', String(await freePort()), '-n', 'rogue'], { stdio: ['ignore', 'ignore', 'pipe'] });
  cleanups.push(() => killProcess(rogue));
  await new Promise<void>((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => reject(new Error(`the rogue route was not refused:\n${log.slice(-1000)}`)), 20_000);
    rogue.stderr!.on('data', (b: Buffer) => {
      log += b.toString();
      if (log.includes("Route Error 'Authorization Violation'")) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  await killProcess(rogue);

  await buy(operator, 1, Object.fromEntries([3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((s) => [s, 3])), feed);
  expect((await http.create('team1', 'team1pass', 1, 'UNDY')).status).toBe(200);

  // kill -9 of a node: the launcher starts it again with the same name, ports and store.
  const pid = Number(execFileSync('pgrep', ['-f', `nats-server .*-sd ${join(data, 'nats-cluster/n2')} `], { encoding: 'utf8' }).trim().split('\n')[0]);
  process.kill(pid, 'SIGKILL');
  await run.waitForLine((l) => l.msg === 'nats-server restarted' && l.server === 'etf-n2', 'etf-n2 restarted', 60_000);
  // If n2 led the journal, the create may meet the election (a 503 naming its id): retried with the same id, as teams are told to.
  const created = await until(
    async () => {
      const r = await http.send('POST', '/create', { form: { username: 'team1', password: 'team1pass', etf_name: 'UNDY', amount: 1, request_id: 'after-node-kill' } });
      return r.status === 503 ? undefined : r;
    },
    'the create after the node kill to be answered',
    60_000,
  );
  expect(created.status).toBe(200);
  const before = (await until(async () => {
    const h = await http.holdings('team1', 'team1pass');
    return h.status === 200 ? h : undefined;
  }, 'holdings after the node kill', 60_000)).body;
  expect(before.holdings.UNDY).toBe(2);

  run.child.kill('SIGINT');
  expect(await run.exited).toBe(0);
  run = runLauncher(env);
  await healthy();
  expect((await http.holdings('team1', 'team1pass')).body).toEqual(before);
  run.child.kill('SIGINT');
  expect(await run.exited).toBe(0);
}, 360_000);
