import { describe, expect, it } from 'vitest';
import { useSystem } from './helpers/system.js';

/**
 * The HTTP edge of issue 19: HEAD on every GET route, a bad percent-escape,
 * and a gateway that keeps serving after each.
 */
const OPERATOR = { username: 'op', password: 'op-secret-pass' };
const f = useSystem({ operator: OPERATOR });

describe('HEAD', () => {
  it.each(['/', '/operator', '/web/team.js', '/web/style.css', '/metrics', '/health', '/symbols'])('HEAD %s answers like GET without a body, and the gateway lives on', async (path) => {
    const get = await fetch(`${f.sys.url}${path}`);
    const getBody = Buffer.from(await get.arrayBuffer());
    const head = await fetch(`${f.sys.url}${path}`, { method: 'HEAD' });
    expect(head.status).toBe(get.status);
    expect(head.headers.get('content-type')).toBe(get.headers.get('content-type'));
    // /metrics and /health change between two reads: only the static answers have the same length.
    if (path.startsWith('/web/') || path === '/' || path === '/operator') expect(Number(head.headers.get('content-length'))).toBe(getBody.length);
    else expect(Number(head.headers.get('content-length'))).toBeGreaterThan(0);
    expect((await head.arrayBuffer()).byteLength).toBe(0);
    expect((await fetch(`${f.sys.url}/symbols`)).status).toBe(200);
  });
});

describe('percent-escapes', () => {
  it.each(['/positions/1/%ZZ', '/requests/%E0%A4%A', '/holdings%'])('GET %s is a JSON 400', async (path) => {
    const res = await fetch(`${f.sys.url}${path}?username=team1&password=team1pass`);
    expect(res.status).toBe(400);
    expect((await res.json()).error.code).toBe('bad_request');
  });
});
