import { createRequire } from 'node:module';
import { expect, it } from 'vitest';
import bcrypt from 'bcrypt';
import { isNativeAccelerationEnabled } from 'msgpackr';
import uWS from 'uWebSockets.js';

// npm 11 may skip dependency install scripts: these must load from their prebuilt binaries after `npm ci`.
it('loads bcrypt, msgpackr native acceleration and uWebSockets.js', async () => {
  const hash = await bcrypt.hash('password1', 4);
  expect(await bcrypt.compare('password1', hash)).toBe(true);
  expect(isNativeAccelerationEnabled).toBe(true);
  expect(typeof uWS.App).toBe('function');
  const require = createRequire(import.meta.url);
  expect(require.resolve('msgpackr-extract')).toMatch(/msgpackr-extract/);
});
