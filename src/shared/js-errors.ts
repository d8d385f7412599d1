import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';

/**
 * Decisions on JetStream errors by their API code, never by catching
 * everything: "not there" is one answer; a timeout, a refused permission or
 * a server between leaders is another, and must not be taken for it.
 */
export const hasJsApiCode = (err: unknown, code: number): boolean => err instanceof JetStreamApiError && err.code === code;

/** 10059: the stream (or KV bucket) does not exist. */
export const isStreamNotFound = (err: unknown): boolean => hasJsApiCode(err, JetStreamApiCodes.StreamNotFound);

/** 10037: no message at that sequence or for that subject. */
export const isNoMessageFound = (err: unknown): boolean => hasJsApiCode(err, JetStreamApiCodes.NoMessageFound);

/** 10014: the consumer does not exist. */
export const isConsumerNotFound = (err: unknown): boolean => hasJsApiCode(err, JetStreamApiCodes.ConsumerNotFound);

/** 10058: a stream of that name exists already (with other settings); nats-server 2.9 says so when two creators race. */
export const STREAM_NAME_IN_USE = 10058;

export const describeError = (err: unknown): string => (err instanceof Error ? `${err.name}: ${err.message}` : String(err));
