import type uWS from 'uWebSockets.js';

/**
 * A POST route for the bench's bare servers (the ceiling, the naive chain):
 * the whole body, then `answer` with it; `alive` tells whether the client is
 * still there (uWS must not be answered after an abort).
 */
export function onPostBody(answer: (body: Buffer, res: uWS.HttpResponse, alive: () => boolean) => void): (res: uWS.HttpResponse) => void {
  return (res) => {
    let aborted = false;
    res.onAborted(() => (aborted = true));
    const chunks: Buffer[] = [];
    res.onData((ab, last) => {
      chunks.push(Buffer.from(new Uint8Array(ab).slice()));
      if (last && !aborted) answer(Buffer.concat(chunks), res, () => !aborted);
    });
  };
}
