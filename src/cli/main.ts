#!/usr/bin/env node
/**
 * ndfex-etf: the teams' command line, on the client library (src/client).
 *   npx ndfex-etf holdings                       (after npm ci && npm run build)
 *   npm run etf -- create 2 --etf UNDY
 * Credentials from --user/--password or ETF_USER/ETF_PASSWORD; the service
 * from --url or ETF_URL (default http://localhost:8080). Human output, or
 * --json for scripts. Errors are one line on stderr and a non-zero exit.
 */
import { parseArgs } from 'node:util';
import { EtfApiError, EtfClient } from '../client/index.js';
import type { ConversionBody, HoldingsBody } from '../../proto/http.js';
import type { EtfPrice } from '../../proto/marketdata.js';

const USAGE = `usage: ndfex-etf <command> [options]
commands:
  holdings                      your positions
  create <amount> [--etf NAME]  create ETF units from the basket (safe to retry: --request-id KEY; --dry-run changes nothing)
  redeem <amount> [--etf NAME]  redeem ETF units into the basket
  history [--limit N]           your recent creations, redemptions and refusals
  request <id>                  one request's outcome (r42 or your key)
  requests [<id>]               the same; without an id, your recent requests (as history)
  prices                        every ETF: NAV, cost to create, redeem proceeds, premium
  register <username> <password>
  watch [--for SECONDS]         live holdings and prices (Ctrl-C stops)
options:
  --url URL        the service (ETF_URL, default http://localhost:8080)
  --user NAME      (ETF_USER)     --password PASS (ETF_PASSWORD)
  --json           machine-readable output`;

class UsageError extends Error {}

const { values, positionals } = (() => {
  try {
    return parseArgs({
      allowPositionals: true,
      options: {
        url: { type: 'string' },
        user: { type: 'string' },
        password: { type: 'string' },
        json: { type: 'boolean', default: false },
        etf: { type: 'string' },
        'request-id': { type: 'string' },
        'dry-run': { type: 'boolean', default: false },
        limit: { type: 'string' },
        for: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    fail(2, (err as Error).message);
  }
})();

// On Linux, writes to a terminal, a file or a pipe are synchronous: exiting right after loses nothing.
function fail(code: number, message: string): never {
  process.stderr.write(`ndfex-etf: ${message}\n`);
  if (code === 2) process.stderr.write(`${USAGE}\n`);
  process.exit(code);
}

const client = new EtfClient({
  url: values.url ?? process.env.ETF_URL ?? 'http://localhost:8080',
  username: values.user ?? process.env.ETF_USER,
  password: values.password ?? process.env.ETF_PASSWORD,
});

const out = (json: unknown, human: string): void => void process.stdout.write(`${values.json ? JSON.stringify(json) : human}\n`);
const signed = (n: number) => (n > 0 ? `+${n}` : String(n));
const holdingsText = (h: { holdings: Record<string, number> }) =>
  Object.keys(h.holdings).length === 0 ? '(no positions)' : Object.entries(h.holdings).map(([t, q]) => `${t.padEnd(6)} ${String(q).padStart(10)}`).join('\n');
const fmt = (n: number | null, digits = 0) => (n === null ? '—' : n.toFixed(digits));
const priceText = (p: EtfPrice) =>
  `${p.etf.padEnd(6)} nav ${fmt(p.nav, 1)}  create cost ${fmt(p.create_cost)}  redeem proceeds ${fmt(p.redeem_proceeds)}  bid/ask ${fmt(p.etf_bid)}/${fmt(p.etf_ask)}  premium ${p.premium === null ? '—' : `${(p.premium * 100).toFixed(2)}%`}  edges ${fmt(p.create_edge)}/${fmt(p.redeem_edge)}`;

function amountArg(): number {
  const a = positionals[1];
  if (a === undefined || !/^[0-9]+$/.test(a) || Number(a) < 1) throw new UsageError(`amount must be a whole number of units, at least 1 (got ${a ?? 'nothing'})`);
  return Number(a);
}

const conversionText = (r: ConversionBody) =>
  `${r.dry_run ? `would ${r.op}` : r.op === 'create' ? 'created' : 'redeemed'} ${r.amount} ${r.etf_name} (${r.request_id}${r.replayed ? ', replayed: nothing changed now' : ''}): ` +
  Object.entries(r.deltas)
    .map(([t, d]) => `${t} ${signed(d)}`)
    .join(', ') +
  (r.fee ? `; fee ${r.fee}` : '');

async function main(): Promise<void> {
  const cmd = positionals[0];
  if (values.help || !cmd) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  switch (cmd) {
    case 'holdings': {
      const h = await client.holdings();
      return out(h, `${h.username} (client ${h.client_id}, seq ${h.seq}, cash ${h.cash})\n${holdingsText(h)}`);
    }
    case 'create':
    case 'redeem': {
      const amount = amountArg();
      const opts = { etf: values.etf, requestId: values['request-id'], dryRun: values['dry-run'] };
      const r = cmd === 'create' ? await client.create(amount, opts) : await client.redeem(amount, opts);
      return out(r, conversionText(r));
    }
    case 'history':
      return history();
    case 'requests':
    case 'request': {
      const id = positionals[1];
      if (id === undefined && cmd === 'requests') return history();
      if (!id) throw new UsageError('request needs an id (r42, or the key it was sent with)');
      const e = await client.request(id);
      return out(e, `${e.request_id} ${e.kind} ${e.amount ?? ''} ${e.etf ?? ''}: ${e.status}${e.error ? ` (${e.error.message})` : ''}`);
    }
    case 'prices': {
      const { etfs } = await client.etfs();
      return out(etfs, etfs.map((e) => (e.price ? priceText(e.price) : `${e.name.padEnd(6)} (no prices yet)`)).join('\n'));
    }
    case 'register': {
      const [, username, password] = positionals;
      if (!username || !password) throw new UsageError('register needs a username and a password');
      const r = await client.register(username, password);
      return out(r, `registered ${r.username}: client_id ${r.client_id}`);
    }
    case 'watch':
      return watch();
    default:
      throw new UsageError(`unknown command ${cmd}`);
  }
}

async function history(): Promise<void> {
  const limit = values.limit === undefined ? 20 : Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1) throw new UsageError('--limit must be a whole number');
  const page = await client.history({ limit });
  return out(
    page,
    page.entries.length === 0
      ? '(no requests yet)'
      : page.entries
          .map((e) => `${e.request_id.padEnd(6)} ${new Date(e.ts).toISOString()} ${e.kind.padEnd(8)} ${String(e.amount ?? '').padStart(5)} ${(e.etf ?? '').padEnd(5)} ${e.status}${e.error ? `: ${e.error.message}` : ''}`)
          .join('\n'),
  );
}

/** Live holdings and prices, one line per change, until Ctrl-C or --for seconds. */
function watch(): Promise<void> {
  const seconds = values.for === undefined ? null : Number(values.for);
  if (seconds !== null && !(seconds > 0)) throw new UsageError('--for takes a number of seconds');
  let interrupted = false;
  return new Promise((resolve, reject) => {
    const stream = client.stream({
      onHoldings: (h, cause) => out({ type: 'holdings', cause, ...h }, `[${new Date().toISOString().slice(11, 23)}] holdings seq ${h.seq} (${cause}): ${Object.entries(h.holdings).map(([t, q]) => `${t} ${q}`).join(', ') || '(none)'}`),
      onPrice: (p) => out({ type: 'price', ...p }, `[${new Date().toISOString().slice(11, 23)}] ${priceText(p)}`),
      onRequest: (o) => out({ type: 'request', ...o }, `[${new Date().toISOString().slice(11, 23)}] ${o.op} ${o.amount} ${o.etf ?? ''} ${o.request_id}: ${o.status}`),
      onError: (e) => (values.json ? out({ type: 'error', ...e }, '') : process.stderr.write(`(stream: ${e.code}: ${e.message})\n`)),
      // --json said nothing of a stream that could not connect: a script saw silence where a person saw why. Its first
      // 'open' stays unsaid (the snapshot is the first line, as before); one after a 'reconnecting' is news.
      onStatus: (s, detail) => {
        if (s === 'refused') {
          stream.close();
          reject(new EtfApiError(401, { error: { code: 'unauthorized', message: `stream refused: ${detail ?? 'authentication failed'}` } }));
        } else if (!values.json) process.stderr.write(`(${s}${detail ? `: ${detail}` : ''})\n`);
        else if (s === 'reconnecting' || interrupted) out({ type: 'status', status: s, ...(detail ? { detail } : {}) }, '');
        interrupted = s === 'reconnecting';
      },
    });
    const stop = () => {
      stream.close();
      resolve();
    };
    process.once('SIGINT', stop);
    if (seconds !== null) setTimeout(stop, seconds * 1000);
  });
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    if (err instanceof UsageError) fail(2, err.message);
    if (err instanceof EtfApiError) fail(1, `${err.code}: ${err.message}${err.requestId && err.status === 503 ? ` (look it up: ndfex-etf request ${err.requestId})` : ''}`);
    const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
    const where = values.url ?? process.env.ETF_URL ?? 'http://localhost:8080';
    if (cause?.code === 'ECONNREFUSED') fail(1, `cannot reach ${where}: is the service running (npm start)?`);
    fail(1, `${(err as Error).message}${cause?.message ? `: ${cause.message}` : ''} (${where})`);
  },
);
