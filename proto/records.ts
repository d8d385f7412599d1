/**
 * The record shapes every engine message shares (proto/codec.ts
 * encodeRecords): the key lists, in order, of the objects a create or redeem
 * puts on the bus in the command batch, its answer and its notice. A shape
 * listed here is known to every reader, so a message names it by its index
 * instead of defining it; any other shape is defined in the message itself,
 * as before, and decodes the same (only larger and slower).
 *
 * Why: a record defined in a message got a reader compiled for that message
 * (msgpackr builds one with `new Function` once a shape is read a third
 * time), so every batch compiled a few functions in the gateway, the engine
 * and the notice readers; and every message carried its definitions.
 *
 * The list is part of the wire format: an entry's index is its id. Append
 * only, and only with a new version of the messages that carry the new shape
 * (a build with a shorter list misreads its id); the other messages never
 * name it, so builds on either list read them alike (test/records.test.ts).
 * Key order matters: it is the order the object's keys were set in
 * (records.test checks the engine and gateway build their hot messages in
 * these orders).
 */
export const SHARED_RECORD_SHAPES: readonly (readonly string[])[] = [
  // CommandBatch, CommandEnvelope, a conversion command (the gateway always sends its idempotency key), a holdings read.
  ['v', 'cmds'],
  ['id', 'cmd'],
  ['op', 'clientId', 'etf', 'amount', 'key'],
  ['op', 'clientId'],
  // ReplyBatch, an accepted and a refused reply, a conversion's answer and the holdings in it (and a holdings read's answer).
  ['v', 'replies'],
  ['id', 'ok', 'result'],
  ['id', 'ok', 'error'],
  ['request_id', 'client_request_id', 'op', 'etf', 'amount', 'deltas', 'fee', 'basket_version', 'holdings'],
  ['client_id', 'username', 'seq', 'positions', 'cash'],
  // NoticeBatch, a holdings change (a fill's with its fill), an accepted conversion's outcome.
  ['v', 'changes', 'outcomes'],
  ['client_id', 'seq', 'cause', 'deltas', 'positions', 'cash', 'ts'],
  ['client_id', 'seq', 'cause', 'deltas', 'positions', 'cash', 'ts', 'fill'],
  ['seq', 'price'],
  ['request_id', 'client_id', 'op', 'etf', 'amount', 'status', 'ts', 'client_request_id', 'deltas'],
  // Notice batches version 3: an accepted conversion's outcome with its fee.
  ['request_id', 'client_id', 'op', 'etf', 'amount', 'status', 'ts', 'client_request_id', 'deltas', 'fee'],
];

/** A fresh copy for one encoder or decoder: msgpackr keeps its readers and transitions on the lists it is given. */
export const sharedRecordShapes = (): string[][] => SHARED_RECORD_SHAPES.map((s) => [...s]);

/** Every plain object's key list in `value` that is not a shared shape (proto/records.ts), each once: what a message would define inline. */
export function unsharedShapes(value: unknown): string[] {
  const known = new Set(SHARED_RECORD_SHAPES.map((s) => s.join()));
  const found = new Set<string>();
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) return v.forEach(walk);
    if (v === null || typeof v !== 'object' || ArrayBuffer.isView(v)) return;
    const keys = Object.keys(v).join();
    if (!known.has(keys)) found.add(keys);
    Object.values(v).forEach(walk);
  };
  walk(value);
  return [...found];
}
