import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { freePort, type NatsServer } from '../../src/launcher/nats-server.js';
import { prepareNatsAuth, routeCredentials, type NatsAuth } from '../../src/launcher/nats-auth.js';
import { planCluster, startClusterNode, whenJetStreamReady, type ClusterPlan } from '../../src/launcher/nats-cluster.js';
import { connectNats } from '../../src/shared/nats.js';
import { retryTransient } from '../../src/shared/js-retry.js';
import { provisionStreams } from '../../src/shared/streams.js';
import type { Role } from '../../proto/roles.js';
import { portTaken } from './system.js';
import { hasJsApiCode } from '../../src/shared/js-errors.js';

/** JetStream's "no suitable peers for placement": a cluster whose nodes have not all joined. */
const NO_PEERS_YET = 10005;

export interface TestCluster {
  plan: ClusterPlan;
  /** Every node's client URL, comma-separated (a NATS_URL). */
  url: string;
  auth: NatsAuth;
  /** The running node at each index (undefined while killed). */
  nodes: (NatsServer | undefined)[];
  /** A client of the cluster with one role's credentials, as the launcher hands them out. */
  connect(role: Role, name?: string): Promise<NatsConnection>;
  /** The index of the node that leads `stream` right now. */
  leaderOf(stream: string): Promise<number>;
  kill(i: number): Promise<void>;
  restart(i: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A real nats-server cluster on loopback, set up exactly as the launcher's
 * NATS_CLUSTER mode does it (src/launcher/nats-cluster.ts): generated users
 * and permissions on every node, authenticated routes, a store per node under
 * `dir`, and every stream and bucket provisioned by the operator with
 * `replicas` copies once JetStream has elected its meta leader.
 */
export async function startTestCluster(dir: string, size = 3, replicas = Math.min(3, size)): Promise<TestCluster> {
  const authDir = join(dir, 'nats-auth');
  const auth = prepareNatsAuth(authDir);
  const storeRoot = join(dir, 'nats-cluster');
  // Free ports can be taken by another test file's process before a node binds them (as in startTestNats): new ones then.
  // Once under a full suite, the nodes started but never all joined: JetStream answered "no suitable peers for
  // placement" for a whole minute (a route port taken between its pick and its bind would do that). A new cluster then.
  let plan: ReturnType<typeof planCluster>;
  let nodes: (NatsServer | undefined)[];
  const conns: NatsConnection[] = [];
  const connect = async (role: Role, name = `test-${role}`) => {
    const nc = await connectNats(plan.url, name, { role, credsFile: auth.credsFile(role) });
    conns.push(nc);
    return nc;
  };
  let operator: NatsConnection;
  for (let attempt = 1; ; attempt++) {
    const ports: number[] = [];
    const clusterPorts: number[] = [];
    for (let i = 0; i < size; i++) {
      ports.push(await freePort());
      clusterPorts.push(await freePort());
    }
    plan = planCluster({ ports, clusterPorts, storeRoot, configDir: authDir, authConfigFile: auth.configFile, routes: routeCredentials(authDir) });
    const started = await Promise.allSettled(plan.nodes.map((n) => startClusterNode(n)));
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    const stopAll = async () => {
      for (const r of started) if (r.status === 'fulfilled') await r.value.stop();
      rmSync(storeRoot, { recursive: true, force: true });
    };
    if (failed) {
      await stopAll();
      if (attempt >= 5 || !portTaken(failed.reason)) throw failed.reason;
      continue;
    }
    nodes = started.map((r) => (r as PromiseFulfilledResult<NatsServer>).value);
    operator = await connect('operator', 'test-cluster-operator');
    try {
      await whenJetStreamReady(operator, () => provisionStreams(operator, replicas), 30_000);
      break;
    } catch (err) {
      await operator.close().catch(() => {});
      conns.splice(0);
      await stopAll();
      if (attempt >= 3 || !hasJsApiCode(err, NO_PEERS_YET)) throw err;
    }
  }
  return {
    plan,
    url: plan.url,
    auth,
    nodes,
    connect,
    leaderOf: async (stream) => {
      // No API check (a request of its own, which times out unretried during an election: a bare TimeoutError, seen in a full run).
      const jsm = await jetstreamManager(operator, { checkAPI: false });
      // Asked again while an election leaves the stream without an answer.
      const leader = (await retryTransient(`${stream} leader`, () => jsm.streams.info(stream), { deadlineMs: 30_000 })).cluster?.leader;
      const i = plan.nodes.findIndex((n) => n.name === leader);
      if (i < 0) throw new Error(`${stream} has no leader (${leader ?? 'none'})`);
      return i;
    },
    kill: async (i) => {
      await nodes[i]?.stop('SIGKILL');
      nodes[i] = undefined;
    },
    restart: async (i) => {
      nodes[i] = await startClusterNode(plan.nodes[i]!);
    },
    stop: async () => {
      for (const nc of conns) await nc.close().catch(() => {});
      await Promise.all(nodes.map((n) => n?.stop()));
    },
  };
}
