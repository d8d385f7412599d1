// TEMP probe: which NATS subjects a /create load produces (not committed).
import autocannon from 'autocannon';
import { connect } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { encode } from '../proto/codec.js';
import { fillSubject } from '../proto/subjects.js';
import { startBenchSystem, benchRoster } from './system.js';

const sys = await startBenchSystem(benchRoster(8), { http: { host: '127.0.0.1', port: 0, maxBodyBytes: 16384, server: 'uws' } as never });
const nc = await connect({ servers: sys.nats.url });
const js = jetstream(nc);
let seq = 1;
for (let id = 1; id <= 8; id++) for (let symbol = 3; symbol <= 12; symbol++) await js.publish(fillSubject(id), encode({ seq: seq++, client_id: id, symbol, side: 1, quantity: 100_000_000, price: 100 }));
const requests = Array.from({ length: 8 }, (_, i) => ({ method: 'POST', path: '/create', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `username=team${i + 1}&password=team${i + 1}pass&etf_name=UNDY&amount=1` }));
await autocannon({ url: sys.url, connections: 64, duration: 3, requests });
const counts = new Map<string, { n: number; bytes: number }>();
const sub = nc.subscribe('>', { callback: (_e, m) => { const k = m.subject.startsWith('_INBOX') ? m.subject.split('.')[0]! : m.subject.split('.').slice(0, 3).join('.'); const c = counts.get(k) ?? { n: 0, bytes: 0 }; c.n++; c.bytes += m.data.length; counts.set(k, c); } });
const r = await autocannon({ url: sys.url, connections: 64, duration: 5, requests });
sub.unsubscribe();
const total = r['2xx'] + r.non2xx;
console.log('requests', total);
for (const [k, c] of [...counts].sort((a, b) => b[1].n - a[1].n)) console.log(k.padEnd(40), c.n, (c.n / total).toFixed(3), 'per req', Math.round(c.bytes / c.n), 'B avg');
await nc.close();
await sys.stop();
