import { Packr } from 'msgpackr';

/**
 * The one msgpack codec every NATS payload goes through. `useRecords: false`
 * keeps messages self-describing plain maps, so a team can read them from any
 * language's msgpack library (records would need this process's structure table).
 */
const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

export const encode = (value: unknown): Uint8Array => packr.pack(value);
export const decode = <T>(bytes: Uint8Array): T => packr.unpack(bytes) as T;
