import { WS_PATH } from '../../../proto/ws.js';
import type { Logger } from '../../shared/log.js';
import { Hub, type HubDeps, type HubStats } from './hub.js';
import { wsLimits, type WsLimits } from './limits.js';
import { parseUpgradeQuery } from './protocol.js';
import { parseBasic } from '../params.js';
import type { WsEndpoint } from '../transport/types.js';
import type { RequestInfo } from '../http.js';

export interface WsHandle {
  readonly stats: HubStats;
  /** What the HTTP server serves on WS_PATH. */
  readonly endpoint: WsEndpoint;
  /** Closes the streams of accounts whose sign-in changed (4001): they authenticate again. */
  signInChanged(usernames: readonly string[] | null): void;
  /** Closes every connection with 1001 "server shutting down" and unsubscribes from NATS. */
  close(): void;
}

/**
 * The holdings/price stream on `WS_PATH`, for whichever HTTP server runs
 * (src/gateway/transport): the upgrade's checks and the sessions are the same
 * on each; only how frames reach the socket differs (the Transport).
 */
export function createWebSocket(deps: HubDeps, log: Logger, overrides: Partial<WsLimits> = {}, originAllowed: (info: RequestInfo) => boolean = () => true): WsHandle {
  const limits = wsLimits(overrides);
  const hub = new Hub(deps, log, limits);
  hub.start();

  const endpoint: WsEndpoint = {
    path: WS_PATH,
    maxPayloadBytes: limits.maxMessageBytes,
    maxBackpressureBytes: limits.hardBufferBytes,
    idleTimeoutS: limits.idleTimeoutS,
    upgrade: (info) => {
      if (!originAllowed(info)) return { refuse: { status: 403, body: { error: { code: 'forbidden', message: `cross-origin WebSocket refused: Origin ${info.origin} is not this gateway`, field: 'origin' } } } };
      const query = parseUpgradeQuery(info.query);
      if (!query.ok) return { refuse: { status: 400, body: { error: { code: 'bad_request', message: query.message } } } };
      let basic: { username: string; password: string } | 'invalid' | null = info.authorization === '' ? null : (parseBasic(info.authorization) ?? 'invalid');
      return {
        open: (transport) => {
          const session = hub.open(transport, query.format, info.address);
          const credentials = basic;
          basic = null; // the password lives no longer than the check
          session.open(credentials, query.resumeFrom);
          return {
            message: (data, isBinary) => session.onMessage(data, isBinary),
            drain: () => session.onDrain(),
            closed: () => session.onClosed(),
          };
        },
      };
    },
  };

  return {
    get stats() {
      return hub.summary;
    },
    endpoint,
    signInChanged: (usernames) => hub.signInChanged(usernames),
    close: () => hub.close(),
  };
}
