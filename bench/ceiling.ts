/**
 * The HTTP ceiling the gateway is measured against: uWS answering a form POST
 * with JSON and nothing else (no auth, no NATS, no engine). Spawned by
 * bench/create.ts; prints "ceiling listening <port>" when ready.
 */
import uWS from 'uWebSockets.js';
import { onPostBody } from './uws-post.js';

const app = uWS.App().post(
  '/*',
  onPostBody((body, res) => {
    const form = new URLSearchParams(body.toString());
    const json = JSON.stringify({ username: form.get('username'), amount: Number(form.get('amount')) });
    res.cork(() => res.writeStatus('200 OK').writeHeader('content-type', 'application/json').end(json));
  }),
);

const port = await new Promise<number>((resolve, reject) => app.listen('127.0.0.1', 0, (t) => (t ? resolve(uWS.us_socket_local_port(t)) : reject(new Error('listen failed')))));
process.on('SIGTERM', () => process.exit(0));
console.log(`ceiling listening ${port}`);
