import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import bcrypt from 'bcrypt';
import { ROLES, rolePermissions, type Role } from '../../proto/roles.js';
import { ConfigError } from '../config/config.js';

export interface NatsAuth {
  /** nats-server configuration with every role's user and permissions. */
  configFile: string;
  /** The credentials file (`{"user", "password"}`) each role connects with. */
  credsFile(role: Role): string;
}

/**
 * Each role's NATS user, generated at the first start into `dir` (0700, files
 * 0600: only the account that runs the system can read them) and kept, so a
 * restart (or a service restarted alone) still connects. The server config is
 * rewritten at each start from proto/roles.ts, so permissions follow the code
 * (and the number of engine shards, whose subjects are listed by name).
 */
export function prepareNatsAuth(dir: string, shards = 1): NatsAuth {
  const permissions = rolePermissions(shards);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const credsFile = (role: Role) => join(dir, `${role}.json`);
  const users = ROLES.map((role) => {
    const file = credsFile(role);
    let password = recordedPassword(file, role);
    if (!password) {
      password = randomBytes(32).toString('base64url');
      writeFileSync(file, JSON.stringify({ user: role, password }), { mode: 0o600 });
    }
    chmodSync(file, 0o600);
    const p = permissions[role];
    return {
      user: role,
      // The server compares bcrypt hashes: the config holds no password.
      password: bcrypt.hashSync(password, 6),
      permissions: { publish: p.publish, subscribe: p.subscribe },
    };
  });
  const configFile = join(dir, 'nats-server.conf');
  // nats-server's config language reads JSON; quoted strings keep bcrypt's `$` literal.
  writeFileSync(configFile, `# written by the launcher from proto/roles.ts at each start\nauthorization: ${JSON.stringify({ users }, null, 2)}\n`, { mode: 0o600 });
  chmodSync(configFile, 0o600);
  return { configFile, credsFile };
}

/** The user and password cluster nodes authenticate their routes with. */
export interface RouteCredentials {
  user: string;
  password: string;
}

/**
 * The routes' credentials of a local cluster, generated once into `dir`
 * (0600, beside the roles' files) and kept: a node restarted alone must
 * still be let in by the others.
 */
export function routeCredentials(dir: string): RouteCredentials {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'route.json');
  const password = recordedPassword(file, 'route');
  if (password) {
    chmodSync(file, 0o600);
    return { user: 'route', password };
  }
  const creds = { user: 'route', password: randomBytes(32).toString('base64url') };
  writeFileSync(file, JSON.stringify(creds), { mode: 0o600 });
  chmodSync(file, 0o600);
  return creds;
}

/**
 * The password of a credentials file generated earlier, null when there is
 * none yet. One that cannot be read, or is not what the launcher writes, is a
 * ConfigError naming it: replacing it silently would lock out whatever still
 * uses the old one (a node restarted alone, an operator tool).
 */
function recordedPassword(file: string, user: string): string | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ConfigError(`NATS credentials file ${file}: ${(err as Error).message}`);
  }
  let c: { user?: unknown; password?: unknown } | undefined;
  try {
    c = JSON.parse(text) as typeof c;
  } catch {
    c = undefined;
  }
  if (c?.user === user && typeof c.password === 'string' && c.password.length >= 32) return c.password;
  throw new ConfigError(`NATS credentials file ${file} is not the {"user": "${user}", "password"} the launcher writes: delete it to have a new one generated`);
}
