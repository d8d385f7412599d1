import type { NatsConnection } from '@nats-io/transport-node';
import { decodeRecordsAs, encodeRecords } from '../../proto/codec.js';
import { ENGINE_PROTOCOL_VERSION, engineReplyProblem, replyBatchShape, type CommandBatch, type NameHolder } from '../../proto/engine.js';
import { shardNames, shardOfUsername } from '../../proto/shards.js';
import type { Logger } from '../shared/log.js';

/** A roster line of this shard whose username another shard decides. */
export interface NameClaim {
  username: string;
  clientId: number;
}

/**
 * Asks each username's shard to reserve it for this shard's roster account
 * (proto/engine.ts `claim`). Returns who holds each name it answered for;
 * a name left out got no answer (its shard down or starting: NATS says no
 * one listens; or no answer within `timeoutMs`), and is asked again later.
 *
 * One request per name: the shard answers a batch in as many messages as its
 * group commits split it into, and a request takes the first message only.
 */
export async function claimNames(nc: NatsConnection, claims: NameClaim[], shards: number, timeoutMs: number, log: Logger): Promise<Map<string, NameHolder>> {
  const held = new Map<string, NameHolder>();
  await Promise.all(
    claims.map(async ({ username, clientId }) => {
      const shard = shardOfUsername(username, shards);
      const batch: CommandBatch = { v: ENGINE_PROTOCOL_VERSION, cmds: [{ id: 1, cmd: { op: 'claim', username, clientId } }] };
      try {
        const msg = await nc.request(shardNames(shard, shards).names, encodeRecords(batch), { timeout: timeoutMs });
        const reply = decodeRecordsAs(msg.data, replyBatchShape).replies[0];
        const problem = engineReplyProblem(reply);
        if (problem !== null) return log.warn({ username, shard, problem }, 'an unreadable answer to a username reservation: asked again later');
        if (!reply!.ok) return log.warn({ username, shard, error: reply!.error }, 'a username reservation refused: asked again later');
        held.set(username, reply!.result as NameHolder);
      } catch (err) {
        log.debug({ username, shard, err: String(err) }, 'a username reservation not answered: asked again later');
      }
    }),
  );
  return held;
}
