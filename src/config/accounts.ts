import { readFileSync } from 'node:fs';
import type { Delta } from '../../proto/journal.js';
import type { Instruments } from './baskets.js';
import { USERNAME_PATTERN } from '../../proto/http.js';
import { ConfigError } from './config.js';

/** One account from the roster file, before its password is hashed. */
export interface RosterAccount {
  /** Given by an exchange-format line; assigned by the engine for ETF-format lines. */
  clientId?: number;
  username: string;
  password: string;
  /** Opening holdings of an ETF-format line. */
  opening: Delta[];
  line: number;
}

/**
 * Reads the accounts file. Two line formats exist and may be mixed:
 *   exchange roster (users.txt):  `client_id username password`
 *   original ETF engine:          `username password [symbol amount]...`
 * A 3-token line starting with digits is the first; an even token count the second.
 * Blank lines and `#` comments are skipped. Any other line is an error naming file and line.
 */
export function loadAccountsFile(path: string, instruments: Instruments): RosterAccount[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`accounts file ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : (err as Error).message}`);
  }
  return parseAccounts(text, path, instruments);
}

export function parseAccounts(text: string, origin: string, instruments: Instruments): RosterAccount[] {
  const out: RosterAccount[] = [];
  const seenNames = new Map<string, number>();
  const seenIds = new Map<number, number>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = i + 1;
    const fail = (msg: string): never => {
      throw new ConfigError(`accounts file ${origin}, line ${line}: ${msg}`);
    };
    const content = raw.replace(/#.*/, '').trim();
    if (content === '') return;
    const tok = content.split(/\s+/);
    let acc: RosterAccount;
    if (tok.length === 3 && /^\d+$/.test(tok[0]!)) {
      const clientId = Number(tok[0]);
      if (clientId < 1 || clientId > 0xffffffff) fail(`client_id ${tok[0]} is not a u32 above 0`);
      acc = { clientId, username: tok[1]!, password: tok[2]!, opening: [], line };
    } else if (tok.length % 2 === 0) {
      // "1 secret" is far more likely a roster line missing a field than a user named "1".
      if (/^\d+$/.test(tok[0]!)) fail('expected "client_id username password": a username cannot be all digits');
      const opening: Delta[] = [];
      for (let k = 2; k < tok.length; k += 2) {
        const sym = instruments.symbolOf(tok[k]!) ?? fail(`unknown symbol ${tok[k]}`);
        if (!/^-?\d+$/.test(tok[k + 1]!) || !Number.isSafeInteger(Number(tok[k + 1]))) fail(`amount ${tok[k + 1]} is not an integer`);
        opening.push([sym, Number(tok[k + 1])]);
      }
      acc = { username: tok[0]!, password: tok[1]!, opening, line };
    } else {
      fail('expected "client_id username password" or "username password [symbol amount]..."');
    }
    if (!USERNAME_PATTERN.test(acc!.username)) fail(`username ${JSON.stringify(acc!.username)} must be 1-16 of [A-Za-z0-9_.-]`);
    const pwBytes = Buffer.byteLength(acc!.password);
    if (pwBytes < 1 || pwBytes > 72) fail('password must be 1-72 bytes');
    const dupName = seenNames.get(acc!.username);
    if (dupName !== undefined) fail(`username ${acc!.username} already on line ${dupName}`);
    seenNames.set(acc!.username, line);
    if (acc!.clientId !== undefined) {
      const dupId = seenIds.get(acc!.clientId);
      if (dupId !== undefined) fail(`client_id ${acc!.clientId} already on line ${dupId}`);
      seenIds.set(acc!.clientId, line);
    }
    out.push(acc!);
  });
  return out;
}
