import type uWS from 'uWebSockets.js';
import { WS_PATH, type WsFormat } from '../../../proto/ws.js';
import type { Logger } from '../../shared/log.js';
import { Hub, type HubDeps, type HubStats } from './hub.js';
import { wsLimits, type WsLimits } from './limits.js';
import { parseUpgradeQuery } from './protocol.js';
import { parseBasic } from '../params.js';
import { socketAddress, type AddressSource } from '../http.js';
import type { Session, Transport } from './session.js';

interface UserData {
  format: WsFormat;
  basic: { username: string; password: string } | 'invalid' | null;
  resumeFrom?: number;
  session?: Session;
  closed: boolean;
  address: string;
}

export interface WsHandle {
  readonly stats: HubStats;
  /** Closes every connection with 1001 "server shutting down" and unsubscribes from NATS. */
  close(): void;
}

/**
 * Mounts the holdings/price stream on `WS_PATH` of the gateway's uWS app.
 * Must be called before the app's catch-all HTTP route is registered.
 */
export function attachWebSocket(app: uWS.TemplatedApp, deps: HubDeps, log: Logger, overrides: Partial<WsLimits> = {}, addressOf: AddressSource = socketAddress): WsHandle {
  const limits = wsLimits(overrides);
  const hub = new Hub(deps, log, limits);
  hub.start();

  const transport = (ws: uWS.WebSocket<UserData>): Transport => ({
    send: (frame, binary) => (ws.getUserData().closed ? 2 : ws.send(frame, binary)),
    buffered: () => (ws.getUserData().closed ? 0 : ws.getBufferedAmount()),
    end: (code, reason) => {
      if (!ws.getUserData().closed) ws.end(code, reason);
    },
    cork: (fn) => {
      if (ws.getUserData().closed) fn();
      else ws.cork(fn);
    },
  });

  app.ws<UserData>(WS_PATH, {
    maxPayloadLength: limits.maxMessageBytes,
    // uWS drops sends beyond this; the session closes with 4008 before relying on it (see Session.sendData).
    maxBackpressure: limits.hardBufferBytes,
    idleTimeout: limits.idleTimeoutS,
    sendPingsAutomatically: true,
    upgrade: (res, req, context) => {
      // req is only valid synchronously: read everything now.
      const query = parseUpgradeQuery(req.getQuery() ?? '');
      if (!query.ok) {
        res.writeStatus('400 Bad Request').writeHeader('content-type', 'application/json');
        res.end(JSON.stringify({ error: { code: 'bad_request', message: query.message } }));
        return;
      }
      const authorization = req.getHeader('authorization');
      const basic = authorization === '' ? null : (parseBasic(authorization) ?? 'invalid');
      res.upgrade<UserData>(
        { format: query.format, basic, resumeFrom: query.resumeFrom, closed: false, address: addressOf(req, res) },
        req.getHeader('sec-websocket-key'),
        req.getHeader('sec-websocket-protocol'),
        req.getHeader('sec-websocket-extensions'),
        context,
      );
    },
    open: (ws) => {
      const ud = ws.getUserData();
      const basic = ud.basic;
      ud.basic = null; // the password lives no longer than the check
      ud.session = hub.open(transport(ws), ud.format, ud.address);
      ud.session.open(basic, ud.resumeFrom);
    },
    message: (ws, data, isBinary) => ws.getUserData().session?.onMessage(data, isBinary),
    drain: (ws) => ws.getUserData().session?.onDrain(),
    close: (ws) => {
      const ud = ws.getUserData();
      ud.closed = true;
      ud.session?.onClosed();
    },
  });

  return {
    get stats() {
      return hub.summary;
    },
    close: () => hub.close(),
  };
}
