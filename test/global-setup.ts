import { natsServerBinary } from '../src/launcher/nats-server.js';

/** Installs nats-server once, before any worker tries to (parallel apt-get runs would fight over its lock). */
export default function setup(): void {
  natsServerBinary();
}
