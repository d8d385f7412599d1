import { Packr, Unpackr } from 'msgpackr';
import { sharedRecordShapes } from './records.js';
import type { Shape } from './shape.js';

/**
 * The one msgpack codec every NATS payload goes through. `useRecords: false`
 * keeps messages self-describing plain maps, so a team can read them from any
 * language's msgpack library: the journal, fills, buckets, market data.
 */
const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

/**
 * The engine's own traffic with the gateways (command batches, answer
 * batches, notice batches: many objects of a few shapes each) is encoded with
 * msgpackr's records: every shape's keys once, not once per object. The
 * shapes of a conversion's messages are shared by every reader
 * (proto/records.ts) and only named by id; any other shape is defined in the
 * message itself. Less than half the bytes of plain maps, and no reader
 * compiled per message.
 */
const shared = sharedRecordShapes();
const recordPackr = new Packr({
  useRecords: true,
  mapsAsObjects: true,
  int64AsType: 'number',
  structures: shared,
  // The shared list stays as proto/ defines it: a shape not in it is defined in its message, never added (no reader would know it).
  maxSharedStructures: shared.length,
});
/** Records without the shared shapes: what an engine of another protocol version can still read (its refusal of that version). */
const selfContainedPackr = new Packr({ useRecords: true, mapsAsObjects: true, int64AsType: 'number' });
/**
 * Reads the engine's records, shared shapes or not. Only those: a reader that
 * knows shapes takes a one-byte integer from 64 up as a shape's id, which a
 * records encoder never writes (it writes such integers on two bytes) but a
 * plain one does. Plain messages (fills, the journal, buckets) go through `decode`.
 */
const recordReader = new Unpackr({ mapsAsObjects: true, int64AsType: 'number', structures: sharedRecordShapes() });

export const encode = (value: unknown): Uint8Array => packr.pack(value);
export const encodeRecords = (value: unknown): Uint8Array => recordPackr.pack(value);
export const encodeSelfContained = (value: unknown): Uint8Array => selfContainedPackr.pack(value);
export const decode = <T>(bytes: Uint8Array): T => packr.unpack(bytes) as T;
/** An engine message (command, answer or notice batch): encoded by encodeRecords or encodeSelfContained. */
export const decodeRecords = <T>(bytes: Uint8Array): T => recordReader.unpack(bytes) as T;

/** A message that decoded but is not of the kind its subject carries: handled as an unreadable one. */
export class MalformedMessage extends Error {
  constructor(
    readonly what: string,
    readonly problem: string,
  ) {
    super(`malformed ${what}: ${problem}`);
    this.name = 'MalformedMessage';
  }
}

/** Decodes a NATS payload and checks it is a `T` (proto/shape.ts); throws MalformedMessage if it is not. */
export const decodeAs = <T>(bytes: Uint8Array, s: Shape<T>): T => checked(packr.unpack(bytes), s);

/** decodeAs for engine messages (decodeRecords). */
export const decodeRecordsAs = <T>(bytes: Uint8Array, s: Shape<T>): T => checked(recordReader.unpack(bytes), s);

function checked<T>(v: unknown, s: Shape<T>): T {
  const problem = s.problem(v);
  if (problem !== null) throw new MalformedMessage(s.what, problem);
  return v as T;
}

/** decodeAs for places that skip a bad message and go on (a KV entry among others): undefined instead of a throw. */
export function decodeIf<T>(bytes: Uint8Array, s: Shape<T>): T | undefined {
  try {
    return decodeAs(bytes, s);
  } catch {
    return undefined;
  }
}
