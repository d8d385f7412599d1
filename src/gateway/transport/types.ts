import type { Reply, RequestInfo } from '../http.js';
import type { Transport } from '../ws/session.js';

/**
 * A request answered before its body was read whole (a 413) has the rest of its body read and dropped, up to
 * DRAIN_BYTES more or for DRAIN_MS, before the connection closes (node.ts Draining, uws.ts UwsReply.held): closing with
 * the upload unread makes the kernel reset the connection, and a client that sends its whole request before reading
 * (Python's http.client) gets a broken pipe instead of the answer. nginx does this too (its lingering close). The
 * bounds keep a client that never stops uploading from holding the connection.
 */
export const DRAIN_MS = 10_000;
export const DRAIN_BYTES = 16 << 20;

/** The HTTP/WebSocket servers the gateway can run on (HTTP_SERVER; `auto`: uWS where it loads, else node). */
export type HttpServerKind = 'uws' | 'node';

/** Every request that is not a WebSocket upgrade: answered through `reply`, however long it takes. */
export type RequestHandler = (info: RequestInfo, reply: Reply) => void;

/** One open WebSocket connection, as the server adapter drives it. */
export interface WsConnection {
  /** `data` is only valid during the call (uWS reuses it). */
  message(data: ArrayBuffer, isBinary: boolean): void;
  /** The socket's backlog went down. */
  drain(): void;
  /** The socket is gone (either side). */
  closed(): void;
}

/** The WebSocket endpoint (src/gateway/ws): where it is, its limits, and what an upgrade becomes. */
export interface WsEndpoint {
  path: string;
  maxPayloadBytes: number;
  /** Unsent bytes past which a send is dropped (reported as 2, like uWS). */
  maxBackpressureBytes: number;
  /** Pings go out, and a connection silent this long is closed. */
  idleTimeoutS: number;
  /** Refuses the upgrade with a JSON answer, or says how to open the connection once upgraded. */
  upgrade(info: RequestInfo): { refuse: { status: number; body: unknown } } | { open(t: Transport): WsConnection };
}

export interface HttpServerOptions {
  handler: RequestHandler;
  ws: WsEndpoint;
  /** For the node server's own answers (malformed requests, timeouts). */
  log: import('../../shared/log.js').Logger;
}

/** What the gateway needs of a server: the rest (routes, auth, limits, pages) is written once, in server.ts. */
export interface HttpServer {
  readonly kind: HttpServerKind;
  /** Resolves with the port listened on (the given one, or the one picked for 0). */
  listen(host: string, port: number): Promise<number>;
  /** Stops taking connections; answers in flight still go out. */
  close(): Promise<void>;
}
