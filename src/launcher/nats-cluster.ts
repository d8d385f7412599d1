import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import bcrypt from 'bcrypt';
import { jetstreamManager, JetStreamApiError } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { startNatsServer, type NatsServer } from './nats-server.js';
import type { RouteCredentials } from './nats-auth.js';
import { isTransientJsError, retryTransient } from '../shared/js-retry.js';
import type { Logger } from '../shared/log.js';

/** The cluster's name: every node of it says the same, and routes from another cluster are refused. */
export const CLUSTER_NAME = 'etf';

export interface ClusterNodeSpec {
  /** Stable across restarts (`etf-n1`…): JetStream knows its peers by server name. */
  name: string;
  port: number;
  clusterPort: number;
  storeDir: string;
  configFile: string;
  url: string;
}

export interface ClusterPlan {
  nodes: ClusterNodeSpec[];
  /** Every node's client URL, comma-separated: a NATS_URL for the services. */
  url: string;
}

/**
 * Writes each node's configuration into `configDir`: the cluster block
 * (listen port, routes to the other nodes, the routes' credentials) and,
 * when the servers take users (nats-auth.ts), the same authorization block
 * on every node by including that file. Routes carry the password in their
 * URLs, so the files are 0600 in the 0700 directory beside the roles' files.
 */
export function planCluster(opts: {
  ports: number[];
  clusterPorts: number[];
  /** Node i's JetStream store is `<storeRoot>/n<i>`. */
  storeRoot: string;
  configDir: string;
  /** The single-server configuration (users and permissions) every node includes. */
  authConfigFile?: string;
  routes?: RouteCredentials;
  host?: string;
}): ClusterPlan {
  const host = opts.host ?? '127.0.0.1';
  mkdirSync(opts.configDir, { recursive: true, mode: 0o700 });
  const userInfo = opts.routes ? `${encodeURIComponent(opts.routes.user)}:${encodeURIComponent(opts.routes.password)}@` : '';
  const routeAuth = opts.routes ? { user: opts.routes.user, password: bcrypt.hashSync(opts.routes.password, 6) } : null;
  const nodes = opts.ports.map((port, i): ClusterNodeSpec => {
    const name = `etf-n${i + 1}`;
    const configFile = join(opts.configDir, `${name}.conf`);
    const cluster = {
      name: CLUSTER_NAME,
      listen: `${host}:${opts.clusterPorts[i]}`,
      ...(routeAuth ? { authorization: routeAuth } : {}),
      routes: opts.clusterPorts.filter((_, j) => j !== i).map((p) => `nats-route://${userInfo}${host}:${p}`),
    };
    const lines = ['# written by the launcher at each start (src/launcher/nats-cluster.ts)'];
    if (opts.authConfigFile) lines.push(`include "${relativeInclude(opts.configDir, opts.authConfigFile)}"`);
    lines.push(`cluster: ${JSON.stringify(cluster, null, 2)}`);
    writeFileSync(configFile, `${lines.join('\n')}\n`, { mode: 0o600 });
    chmodSync(configFile, 0o600);
    return { name, port, clusterPort: opts.clusterPorts[i]!, storeDir: join(opts.storeRoot, `n${i + 1}`), configFile, url: `nats://${host}:${port}` };
  });
  return { nodes, url: nodes.map((n) => n.url).join(',') };
}

/** nats-server resolves an include against the including file's folder, and refuses absolute paths outside it. */
function relativeInclude(configDir: string, file: string): string {
  if (join(configDir, basename(file)) !== file) throw new Error(`${file} must be in ${configDir} to be included by the cluster's node configurations`);
  return basename(file);
}

/** Starts one node of the plan (again, after a crash: same name, ports and store). */
export function startClusterNode(node: ClusterNodeSpec, onExit?: (code: number | null) => void, ownProcessGroup = false): Promise<NatsServer> {
  return startNatsServer({
    port: node.port,
    storeDir: node.storeDir,
    configFile: node.configFile,
    serverName: node.name,
    ownProcessGroup,
    ...(onExit ? { onExit } : {}),
  });
}

/** 10005: no suitable peers for placement: the meta leader has not heard from enough nodes yet. */
const NO_PEERS_YET = 10005;

/**
 * Runs `provision` (creating streams of N replicas) once JetStream answers on
 * the cluster: a meta leader elected, and enough peers known to it to place
 * every replica. Before that, JetStream calls time out, answer 503, or find no
 * peers; each is retried until `deadlineMs`.
 */
export async function whenJetStreamReady<T>(nc: NatsConnection, provision: () => Promise<T>, deadlineMs = 60_000, log?: Logger): Promise<T> {
  return retryTransient(
    'JetStream ready',
    async () => {
      // Creating the manager asks for the account's JetStream info, which only an elected meta leader answers.
      await jetstreamManager(nc, { timeout: 2000 });
      return provision();
    },
    {
      deadlineMs,
      transient: (err) => isTransientJsError(err) || (err instanceof JetStreamApiError && err.code === NO_PEERS_YET),
      basePauseMs: 100,
      ...(log ? { log } : {}),
    },
  );
}
