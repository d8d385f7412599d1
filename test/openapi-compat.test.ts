import { describe, expect, it } from 'vitest';
import { Validator } from '@seriousme/openapi-schema-validator';
import { ROUTES } from '../proto/http.js';
import { api, buy, useSystem } from './helpers/system.js';

const sys = useSystem();

describe('API description', () => {
  it('/openapi.json is valid OpenAPI 3.1 and describes every route of the API, with the error shape', async () => {
    const res = await sys.http.send('GET', '/openapi.json');
    expect(res.status).toBe(200);
    const result = await new Validator().validate(res.body);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(res.body.openapi).toBe('3.1.0');
    const paths = Object.keys(res.body.paths);
    for (const r of Object.values(ROUTES)) {
      const described = r.path.endsWith('/*') ? paths.some((p) => p.startsWith(r.path.slice(0, -1)) && p.length > r.path.length - 1) : paths.includes(r.path);
      expect(described, `${r.path} is described`).toBe(true);
    }
    for (const extra of ['/', '/operator', '/operator/api/accounts', '/metrics', '/ws', '/openapi.json']) expect(paths, extra).toContain(extra);
    expect(res.body.components.schemas.Error.properties.error.required).toEqual(['code', 'message']);
    // The request schemas are the gateway's own: amount a number, or digits in a form body.
    expect(res.body.components.schemas.Conversion.properties.amount.anyOf).toEqual([{ type: 'number' }, { type: 'string', pattern: '^[0-9]{1,16}$' }]);
  });
});

describe("NDFEX's ETF service routes", () => {
  it('/positions/<client_id>[/<symbol>] answer for the team\'s own account only; /symbols lists symbols and ETFs', async () => {
    await buy(sys.nc, 1, { 3: 4, 13: 2 });
    const http = sys.http;
    const auth = { basic: ['team1', 'team1pass'] as [string, string] };
    const all = await http.send('GET', '/positions/1', auth);
    expect(all.status).toBe(200);
    expect(all.body).toMatchObject({ client_id: 1, holdings: { KNAN: 4, UNDY: 2 } });
    expect((await http.send('GET', '/positions/1/KNAN', auth)).body).toEqual({ client_id: 1, symbol: 3, ticker: 'KNAN', quantity: 4 });
    expect((await http.send('GET', '/positions/1/13', auth)).body).toEqual({ client_id: 1, symbol: 13, ticker: 'UNDY', quantity: 2 });
    expect((await http.send('GET', '/positions/1/FISH', auth)).body.quantity).toBe(0);
    expect((await http.send('GET', '/positions/1/NOPE', auth)).status).toBe(404);
    const other = await http.send('GET', '/positions/2', auth);
    expect(other.status).toBe(403);
    expect(other.body.error.code).toBe('forbidden');
    expect((await http.send('GET', '/positions/1')).status).toBe(401);
    const symbols = (await http.send('GET', '/symbols')).body.symbols as { symbol: number; ticker: string; etf: boolean }[];
    expect(symbols).toHaveLength(13);
    expect(symbols.find((s) => s.ticker === 'UNDY')).toMatchObject({ symbol: 13, etf: true });
    expect(symbols.find((s) => s.ticker === 'GOLD')).toMatchObject({ symbol: 1, etf: false });
  });
});
