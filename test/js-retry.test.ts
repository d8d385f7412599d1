import { describe, expect, it } from 'vitest';
import { errors } from '@nats-io/transport-node';
import { JetStreamApiError } from '@nats-io/jetstream';
import { isTransientJsError, retryTransient } from '../src/shared/js-retry.js';

/** The errors nats.js raises while a JetStream leader moves, and the answers that must never be retried. */
describe('JetStream retries', () => {
  it('tells "not now" from "no"', () => {
    expect(isTransientJsError(new errors.TimeoutError())).toBe(true);
    expect(isTransientJsError(new errors.RequestError('no responders', { cause: new errors.NoRespondersError('x') }))).toBe(true);
    expect(isTransientJsError(new JetStreamApiError({ code: 503, err_code: 10008, description: 'JetStream system temporarily unavailable' }))).toBe(true);
    expect(isTransientJsError(new JetStreamApiError({ code: 400, err_code: 10071, description: 'wrong last sequence: 41' }))).toBe(false);
    expect(isTransientJsError(new errors.PermissionViolationError('denied', 'publish', 'etf.journal'))).toBe(false);
    expect(isTransientJsError(new Error('boom'))).toBe(false);
  });

  it('retries transient errors until an answer, and gives up on the first definitive error', async () => {
    let calls = 0;
    const v = await retryTransient('t', async () => {
      if (++calls < 3) throw new errors.TimeoutError();
      return 'stored';
    }, { deadlineMs: 5000, basePauseMs: 1 });
    expect([v, calls]).toEqual(['stored', 3]);

    calls = 0;
    const wrongSeq = new JetStreamApiError({ code: 400, err_code: 10071, description: 'wrong last sequence: 41' });
    await expect(retryTransient('t', async () => {
      calls++;
      throw wrongSeq;
    }, { deadlineMs: 5000, basePauseMs: 1 })).rejects.toBe(wrongSeq);
    expect(calls).toBe(1);
  });

  it('stops at the deadline with the last error', async () => {
    let calls = 0;
    await expect(retryTransient('t', async () => {
      calls++;
      throw new errors.TimeoutError();
    }, { deadlineMs: 50, basePauseMs: 5, maxPauseMs: 10 })).rejects.toBeInstanceOf(errors.TimeoutError);
    expect(calls).toBeGreaterThan(1);
  });
});
