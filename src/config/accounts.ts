import { readFileSync } from 'node:fs';
import type { Delta } from '../../proto/journal.js';
import type { Instruments } from './baskets.js';
import { USERNAME_PATTERN } from '../../proto/http.js';
import type { RosterRefusal } from '../../proto/engine.js';

export type { RosterRefusal };
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

/** What one reading of the accounts file gives: the lines taken and the lines refused. */
export interface RosterReading {
  accounts: RosterAccount[];
  refused: RosterRefusal[];
}

/** A refusal as one line of text, naming the file and the line. */
export const refusalText = (origin: string, r: RosterRefusal): string => (r.line === 0 ? `accounts file ${origin}: ${r.reason}` : `accounts file ${origin}, line ${r.line}: ${r.reason}`);

/**
 * Reads the accounts file, strictly: any line that cannot be taken is an
 * error naming file and line (the launcher's check before anything starts).
 */
export function loadAccountsFile(path: string, instruments: Instruments): RosterAccount[] {
  return strictly(readAccountsFile(path, instruments), path);
}

/**
 * Reads the accounts file line by line: a line that cannot be taken is
 * refused alone, and the others are taken. A running engine (and one the
 * supervisor restarts) reads it so: one mistyped or conflicting line must
 * not take the whole class down. Throws a ConfigError only when the file
 * cannot be read at all.
 */
export function readAccountsFile(path: string, instruments: Instruments): RosterReading {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`accounts file ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : (err as Error).message}`);
  }
  return readAccounts(text, instruments);
}

/** The accounts of a roster text, strictly (every line must be taken). */
export function parseAccounts(text: string, origin: string, instruments: Instruments): RosterAccount[] {
  return strictly(readAccounts(text, instruments), origin);
}

function strictly(reading: RosterReading, origin: string): RosterAccount[] {
  const first = reading.refused[0];
  if (first) throw new ConfigError(refusalText(origin, first));
  return reading.accounts;
}

/**
 * Two line formats exist and may be mixed:
 *   exchange roster (users.txt):  `client_id username password`
 *   original ETF engine:          `username password [symbol amount]...`
 * A 3-token line starting with digits is the first; an even token count the second.
 * Blank lines and `#` comments are skipped. Any other line is refused, as is
 * a second line with a username or client_id an earlier line has.
 */
export function readAccounts(text: string, instruments: Instruments): RosterReading {
  const accounts: RosterAccount[] = [];
  const refused: RosterRefusal[] = [];
  const seenNames = new Map<string, number>();
  const seenIds = new Map<number, number>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = i + 1;
    const content = raw.replace(/#.*/, '').trim();
    if (content === '') return;
    const acc = accountLine(content.split(/\s+/), line, instruments);
    if (typeof acc === 'string') return void refused.push({ line, reason: acc });
    const dupName = seenNames.get(acc.username);
    if (dupName !== undefined) return void refused.push({ line, reason: `username ${acc.username} already on line ${dupName}` });
    if (acc.clientId !== undefined) {
      const dupId = seenIds.get(acc.clientId);
      if (dupId !== undefined) return void refused.push({ line, reason: `client_id ${acc.clientId} already on line ${dupId}` });
      seenIds.set(acc.clientId, line);
    }
    seenNames.set(acc.username, line);
    accounts.push(acc);
  });
  return { accounts, refused };
}

/** One line's account, or why it cannot be one. */
function accountLine(tok: string[], line: number, instruments: Instruments): RosterAccount | string {
  let acc: RosterAccount;
  if (tok.length === 3 && /^\d+$/.test(tok[0]!)) {
    const clientId = Number(tok[0]);
    if (clientId < 1 || clientId > 0xffffffff) return `client_id ${tok[0]} is not a u32 above 0`;
    acc = { clientId, username: tok[1]!, password: tok[2]!, opening: [], line };
  } else if (tok.length % 2 === 0) {
    // "1 secret" is far more likely a roster line missing a field than a user named "1".
    if (/^\d+$/.test(tok[0]!)) return 'expected "client_id username password": a username cannot be all digits';
    const opening: Delta[] = [];
    for (let k = 2; k < tok.length; k += 2) {
      const sym = instruments.symbolOf(tok[k]!);
      if (sym === undefined) return `unknown symbol ${tok[k]}`;
      if (!/^-?\d+$/.test(tok[k + 1]!) || !Number.isSafeInteger(Number(tok[k + 1]))) return `amount ${tok[k + 1]} is not an integer`;
      opening.push([sym, Number(tok[k + 1])]);
    }
    acc = { username: tok[0]!, password: tok[1]!, opening, line };
  } else {
    return 'expected "client_id username password" or "username password [symbol amount]..."';
  }
  if (!USERNAME_PATTERN.test(acc.username)) return `username ${JSON.stringify(acc.username)} must be 1-16 of [A-Za-z0-9_.-]`;
  const pwBytes = Buffer.byteLength(acc.password);
  if (pwBytes < 1 || pwBytes > 72) return 'password must be 1-72 bytes';
  return acc;
}
