/**
 * The NDFEX feed bridge process: joins the exchange's multicast feeds and
 * republishes them on NATS (fills into the JetStream fill stream, top of book,
 * alerts and status). Environment (parsed by src/config/feed.ts):
 *
 *   NATS_URL                 required, e.g. nats://127.0.0.1:4222
 *   NATS_CREDS, NATS_REPLICAS as for every service (src/config/config.ts)
 *   NDFEX_CLEARING_ADDR      clearing feed group:port      (default 239.0.0.2:12346)
 *   NDFEX_MD_ADDR            market-data feed group:port   (default 239.0.0.1:12345)
 *   NDFEX_SNAPSHOT_ADDR      snapshot feed group:port      (default 239.0.0.3:12345)
 *   NDFEX_INTERFACE          interface address to join on  (default 127.0.0.1)
 *   NDFEX_SESSION            operator's exchange session name; changing it begins a new session
 *   NDFEX_RESTART_POLICY     reset (default: positions to 0 at an exchange restart) | keep
 *   NDFEX_STATUS_INTERVAL_MS FeedStatus period              (default 1000)
 *   NDFEX_MAX_IN_FLIGHT      unacknowledged fill publishes  (default 512)
 *   NDFEX_FEED_ROLE          bridge (default) | standby: a second listener that publishes
 *                            the bridge's fills while it is down (src/feed/standby.ts)
 *   LOG_LEVEL                pino level                     (default info)
 */
import { processLogger } from '../shared/log.js';
import { announceReady, exitOnStartError, onShutdown } from '../shared/process.js';
import { loadBridgeConfig } from '../config/feed.js';
import { processSettings } from '../config/process.js';
import { startBridge } from './service.js';
import { StandbyListener } from './standby.js';
import { UDP_REUSEPORT } from './multicast.js';

const settings = processSettings(process.env);
const log = processLogger('feed', settings);
let cfg;
try {
  cfg = loadBridgeConfig(process.env);
} catch (err) {
  exitOnStartError(log, 'feed bridge', err);
}
try {
  if (!UDP_REUSEPORT) log.warn(`Node ${process.versions.node} binds without SO_REUSEPORT: the bridge cannot share the feed ports with NDFEX's own consumers (npm start runs it on Node 22)`);
  const bridge = cfg.role === 'standby' ? await StandbyListener.start(cfg, log) : await startBridge(cfg, log);
  onShutdown(log, () => bridge.close(), settings.launcherPid);
  announceReady('feed');
} catch (err) {
  exitOnStartError(log, 'feed bridge', err);
}
