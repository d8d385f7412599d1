import type { Logger } from '../shared/log.js';
import type { SendAlert } from './alerts.js';
import type { ProblemBook } from './problems.js';
import type { AnyMsg, SeqCopy } from './verdict.js';

/** Where a copy's decision (verdict.ts copyOf) is told: the bridge's session verdict, or the standby. */
export interface CopyReports {
  count(what: 'conflicts' | 'duplicates'): void;
  alert: SendAlert;
  problems: Pick<ProblemBook, 'raise'>;
  log: Logger;
}

/** Where the first of a conflict is kept when it is not applied yet, for the operator to know what becomes of it. */
export interface KeptIn {
  /** "the run of verdict v-…" */
  run: string;
  /** When it is applied: "applied only if the verdict is accepted". */
  applied: string;
  verdict?: string;
}

type Of<K extends SeqCopy['kind']> = Extract<SeqCopy, { kind: K }>;

/**
 * Two messages with one seq: counted, alerted with both contents and a standing problem, the same from the bridge and
 * the standby, so that an operator reads one story whichever heard it.
 */
export function reportConflict(d: Of<'conflict'>, to: CopyReports, now: number, kept?: KeptIn): void {
  to.count('conflicts');
  const first = `${d.applied.fingerprint} from ${d.applied.sender} (${describeMsg(d.applied.msg)})`;
  const which = kept ? `held ${first} in ${kept.run}, kept (${kept.applied})` : `applied ${first}`;
  const detail = `${d.feed} seq ${d.seq} came twice with other content: ${which}, not ${d.other.fingerprint} from ${d.other.sender} (${describeMsg(d.other.msg)})`;
  to.log.warn({ feed: d.feed, seq: d.seq, applied: d.applied.fingerprint, other: d.other.fingerprint, appliedFrom: d.applied.sender, otherFrom: d.other.sender, heldBy: kept?.verdict }, 'seq conflict');
  to.alert(d.feed, { kind: 'conflict', detail, received: d.seq, fingerprints: [d.applied.fingerprint, d.other.fingerprint], ...(kept?.verdict ? { verdict: kept.verdict } : {}) });
  to.problems.raise({ id: `conflict-${d.feed}`, kind: 'conflict', feed: d.feed, detail: `latest: ${detail}`, actions: ['ack'] }, now);
}

/** Either decision of verdict.ts copyOf, told as the bridge tells it. */
export function reportCopy(d: SeqCopy, to: CopyReports, now: number, kept?: KeptIn): void {
  if (d.kind === 'conflict') reportConflict(d, to, now, kept);
  else reportDuplicate(d, to);
}

/** The same message again: counted; from another socket than the first, a replay, alerted. */
export function reportDuplicate(d: Of<'duplicate'>, to: CopyReports): void {
  to.count('duplicates');
  // The exchange sends a seq once, from one socket: the same message again from another is someone replaying it.
  if (d.sender === d.first) return;
  const detail = `${d.feed} seq ${d.seq} sent again by ${d.sender}, a copy of the message passed from ${d.first}: a replay, dropped`;
  to.log.warn({ feed: d.feed, seq: d.seq, sender: d.sender, first: d.first }, 'replayed message dropped');
  to.alert(d.feed, { kind: 'replay', detail, received: d.seq });
}

const describeMsg = (m: AnyMsg): string => JSON.stringify(m, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
