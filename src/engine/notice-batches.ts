import { MAX_BATCH_NOTICES, NOTICE_BATCH_VERSION, type HoldingsNotice, type NoticeBatch } from '../../proto/holdings.js';
import type { OutcomeNotice } from '../../proto/requests.js';

/**
 * A group's notices in batches of at most `max`, in order, each outcome in
 * the batch of its change or after it (`after[i]`: how many of the changes
 * come before outcome i). A conversion's change and its outcome are never
 * split: a reader sees both at once. The desk took the fee from the cash
 * change beside the outcome until outcomes carried it (notice batches
 * version 3), and still does for an older engine's batches; there a group of
 * fills over `max` put every outcome in a later batch than its change, scored
 * with no fee.
 */
export function noticeBatches(changes: readonly HoldingsNotice[], outcomes: readonly OutcomeNotice[], after: readonly number[], max = MAX_BATCH_NOTICES): NoticeBatch[] {
  const batches: NoticeBatch[] = [];
  let c = 0;
  let o = 0;
  while (c < changes.length || o < outcomes.length) {
    const batch: NoticeBatch = { v: NOTICE_BATCH_VERSION, changes: [], outcomes: [] };
    while (batch.changes.length + batch.outcomes.length < max && (c < changes.length || o < outcomes.length)) {
      if (o < outcomes.length && after[o]! <= c) {
        batch.outcomes.push(outcomes[o++]!);
        continue;
      }
      // The change an outcome follows needs room for both: else it opens the next batch.
      const paired = o < outcomes.length && after[o] === c + 1;
      if (paired && batch.changes.length + batch.outcomes.length === max - 1 && batch.changes.length + batch.outcomes.length > 0) break;
      batch.changes.push(changes[c++]!);
    }
    batches.push(batch);
  }
  return batches;
}
