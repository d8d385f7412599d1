import type { DumpResult, EngineCommand, EngineReply, PingResult, ReplyTo } from '../../proto/engine.js';
import type { Route } from '../../proto/shards.js';

/**
 * One answer from every shard's answer to a command asked of all of them
 * (proto/shards.ts routeOf). An operator write is done only when every shard
 * did it; a username is found where one shard knows it; reads gather.
 */
export function mergeShardReplies<C extends EngineCommand>(cmd: C, route: Route, replies: ReplyTo<C>[]): ReplyTo<C> {
  const ok = replies.filter((r) => r.ok);
  const failed = replies.filter((r) => !r.ok);
  if (route.to === 'find') {
    // Not found only when every shard says so; a shard that did not answer might hold it.
    return ok[0] ?? failed.find((r) => !r.ok && r.error.code !== 'not_found' && r.error.code !== 'unknown_account') ?? failed[0]!;
  }
  if (route.to === 'first') return ok[0] ?? failed[0]!;
  if (failed.length > 0) return failed[0]!;
  const results = (ok as { ok: true; result: unknown }[]).map((r) => r.result);
  const merged = cmd.op === 'ping' ? mergePing(results as PingResult[]) : cmd.op === 'dump' ? mergeDump(results as DumpResult[]) : results[0];
  return { ...replies[0]!, result: merged } as EngineReply as ReplyTo<C>;
}

function mergePing(parts: PingResult[]): PingResult {
  // Every shard reads the whole file: a line one refuses is often refused by each, said once.
  const refused = new Map(parts.flatMap((p) => p.roster_refused ?? []).map((r) => [`${r.line}\0${r.reason}`, r]));
  const failing = parts.flatMap((p, shard) => (p.scoreboard_failing ? [{ ...p.scoreboard_failing, ...(parts.length > 1 ? { shard } : {}) }] : []));
  return {
    accounts: parts.reduce((n, p) => n + p.accounts, 0),
    journal_seq: parts.reduce((n, p) => n + p.journal_seq, 0),
    fill_seq: Math.min(...parts.map((p) => p.fill_seq)),
    ...(refused.size ? { roster_refused: [...refused.values()].sort((a, b) => a.line - b.line) } : {}),
    // The first shard whose file fails stands for all: /health names it, and the engine logs of each say the rest.
    ...(failing.length ? { scoreboard_failing: failing[0] } : {}),
    shards: parts.map((p, shard) => ({ shard, accounts: p.accounts, journal_seq: p.journal_seq, fill_seq: p.fill_seq })),
  };
}

function mergeDump(parts: DumpResult[]): DumpResult {
  return {
    journal_seq: parts.reduce((n, p) => n + p.journal_seq, 0),
    fill_seq: Math.min(...parts.map((p) => p.fill_seq)),
    accounts: parts.flatMap((p) => p.accounts).sort((a, b) => a.client_id - b.client_id),
    shards: parts.map((p, shard) => ({ shard, journal_seq: p.journal_seq, fill_seq: p.fill_seq })),
  };
}
