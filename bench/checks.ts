/**
 * What checking NATS messages costs (proto/shape.ts) on the hot paths: the
 * engine's command batches, the gateway's answer batches and the notices, per
 * message, against what decoding them costs, in the same run, interleaved.
 *
 * Run: npm run bench:checks   (BENCH_ROUNDS, default 9; medians and minimums)
 */
import { decodeRecords, encodeRecords } from '../proto/codec.js';
import { commandBatchShape, commandProblem, engineReplyProblem, replyBatchShape, type CommandBatch, type ReplyBatch } from '../proto/engine.js';
import { noticeBatchShape } from '../proto/holdings.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9);
const N = 128;

const commands = encodeRecords({
  v: 3,
  cmds: Array.from({ length: N }, (_, i) => ({ id: i + 1, cmd: { op: i % 2 ? 'create' : 'redeem', clientId: (i % 16) + 1, etf: 'UNDY', amount: 1, key: `k${i}` } })),
});
const holdings = { client_id: 1, username: 'team1', seq: 1, positions: [3, 10, 4, 10, 13, 1], cash: 0 };
const replies = encodeRecords({
  v: 3,
  replies: Array.from({ length: N }, (_, i) => ({ id: i + 1, ok: true, result: { request_id: `r${i}`, op: 'create', etf: 'UNDY', amount: 1, deltas: [3, -1, 4, -1, 13, 1], fee: 0, basket_version: 0, holdings } })),
});
const notices = encodeRecords({
  v: 1,
  changes: Array.from({ length: N / 2 }, (_, i) => ({ client_id: (i % 16) + 1, seq: i, cause: 'create', deltas: [3, -1, 4, -1, 13, 1], positions: [3, 10, 4, 10, 13, 1], cash: 0, ts: 1e12 })),
  outcomes: Array.from({ length: N / 2 }, (_, i) => ({ request_id: `r${i}`, client_id: (i % 16) + 1, op: 'create', etf: 'UNDY', amount: 1, status: 'accepted', deltas: [3, -1, 4, -1, 13, 1], ts: 1e12 })),
});
const cmdBatch = decodeRecords<CommandBatch>(commands);
const replyBatch = decodeRecords<ReplyBatch>(replies);
const noticeBatch: unknown = decodeRecords(notices);

const must = (p: string | null) => {
  if (p !== null) throw new Error(p);
};
const cases: Record<string, () => void> = {
  'command batch: decode': () => decodeRecords(commands),
  'command batch: check': () => {
    must(commandBatchShape.problem(cmdBatch));
    for (const e of cmdBatch.cmds) must(commandProblem(e.cmd));
  },
  'answer batch: decode': () => decodeRecords(replies),
  'answer batch: check': () => {
    must(replyBatchShape.problem(replyBatch));
    for (const r of replyBatch.replies) must(engineReplyProblem(r));
  },
  'notice batch: decode': () => decodeRecords(notices),
  'notice batch: check': () => must(noticeBatchShape.problem(noticeBatch)),
};

const times: Record<string, number[]> = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
for (const f of Object.values(cases)) for (let i = 0; i < 5_000; i++) f();
for (let r = 0; r < ROUNDS; r++) {
  for (const [name, f] of Object.entries(cases)) {
    const k = 5_000;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < k; i++) f();
    times[name]!.push(Number(process.hrtime.bigint() - t0) / k / N);
  }
}
for (const [name, t] of Object.entries(times)) {
  t.sort((a, b) => a - b);
  console.log(`${name.padEnd(24)} ${t[t.length >> 1]!.toFixed(0).padStart(5)} ns per message (median of ${ROUNDS}), min ${t[0]!.toFixed(0)}`);
}
