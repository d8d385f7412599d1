import type { NatsConnection } from '@nats-io/transport-node';
import { decode } from '../../proto/codec.js';
import { fillProblem, type Fill } from '../../proto/fill.js';
import { FILL_STREAM } from '../../proto/subjects.js';
import { readStream, type StreamFollower } from '../shared/stream-reader.js';
import type { Logger } from '../shared/log.js';
import { applyFill } from './core.js';
import type { Account, EngineState } from './state.js';

export interface FillFeedStats {
  applied: number;
  /** Fills for client_ids no account has: counted, not stored, so unknown ids cannot grow memory. */
  unknownAccount: number;
  invalid: number;
}

/**
 * Follows the fill stream from the sequence after the last one the state has
 * applied. Every fill is applied exactly once because the position lives in
 * the state itself (state.fillSeq), not in a consumer's acks.
 */
export async function followFills(
  nc: NatsConnection,
  state: EngineState,
  log: Logger,
  onChange: (acc: Account, fill: Fill) => void,
): Promise<{ follower: StreamFollower; stats: FillFeedStats }> {
  const stats: FillFeedStats = { applied: 0, unknownAccount: 0, invalid: 0 };
  const follower = await readStream(
    nc,
    FILL_STREAM,
    state.fillSeq + 1,
    (m) => {
      if (m.seq <= state.fillSeq) return;
      let fill: Fill;
      try {
        fill = decode<Fill>(m.data);
      } catch {
        fill = undefined as never;
      }
      const problem = fillProblem(fill);
      if (problem) {
        state.fillSeq = m.seq;
        stats.invalid++;
        log.warn({ streamSeq: m.seq, subject: m.subject, problem }, 'invalid fill skipped');
        return;
      }
      const acc = applyFill(state, fill, m.seq);
      if (!acc) {
        if (stats.unknownAccount++ % 1000 === 0) log.warn({ clientId: fill.client_id, count: stats.unknownAccount }, 'fill for unknown client_id ignored');
        return;
      }
      stats.applied++;
      onChange(acc, fill);
    },
    { follow: true },
  );
  return { follower, stats };
}
