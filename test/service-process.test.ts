import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { serviceNodeFlags, startService, Supervisor, type ServiceKind } from '../src/shared/service-process.js';
import { CONFIG_EXIT_CODE } from '../src/config/config.js';
import { LAUNCHER_PID_VAR } from '../src/config/process.js';
import { createLogger } from '../src/shared/log.js';
import { quietLog, tempDir, until } from './helpers/system.js';

/** A Node program given as source (what a service's entry point does, in a few lines). */
const program = (source: string) => ['-e', source];
/** Says it is ready as src/shared/process.ts announceReady does, then serves until stopped. */
const READY = `process.send({ ready: 'svc', details: { pid: process.pid, launcher: process.env.${LAUNCHER_PID_VAR} ?? null } }); process.channel.unref(); setInterval(() => {}, 1000);`;

describe('startService', () => {
  it("every service starts with its Node flags (a flag this Node does not know would stop it before its first line)", async () => {
    for (const kind of ['engine', 'gateway', 'pricing', 'feed', 'sim'] satisfies ServiceKind[]) {
      const s = await startService({ name: kind, args: [...serviceNodeFlags(kind), ...program(`process.send({ ready: 'svc', details: process.execArgv }); process.channel.unref(); setInterval(() => {}, 1000);`)], ready: 'message' });
      expect(s.ready).toEqual(expect.arrayContaining([...serviceNodeFlags(kind)]));
      await s.stop();
    }
    expect(serviceNodeFlags('gateway')).toContain('--no-allocation-site-pretenuring');
  });

  it('a service is ready on its ready message, with the details it sends; stop ends it', async () => {
    const s = await startService({ name: 'svc', args: program(READY), ready: 'message' });
    expect(s.ready).toEqual({ pid: s.child.pid, launcher: null });
    await s.stop();
    expect(s.child.signalCode).toBe('SIGTERM');
  });

  it('a program that cannot send one is ready on a line of its output', async () => {
    const s = await startService({ name: 'line', args: program(`console.log('warming'); console.log('listening 1234'); setInterval(() => {}, 1000);`), ready: (l) => l.startsWith('listening') });
    expect(s.ready).toBe('listening 1234');
    await s.stop();
  });

  it('one that dies first is an error naming it, its exit code and its last lines', async () => {
    await expect(startService({ name: 'broken', args: program(`console.log('cannot read x.json'); process.exit(3);`), ready: 'message', onLine: () => {} })).rejects.toThrow(
      /broken exited with 3 before it was ready:\ncannot read x.json/,
    );
  });
});

describe('Supervisor', () => {
  it('restarts a service that dies and is ready again; one that exits with CONFIG_EXIT_CODE is not restarted; stops the rest', async () => {
    const dir = tempDir();
    const fatal: string[] = [];
    let onFatal!: () => void;
    const fatalSeen = new Promise<void>((r) => (onFatal = r));
    const supervisor = new Supervisor(quietLog, (name) => {
      fatal.push(name);
      onFatal();
    });
    try {
      // Dies at its first start (before ready), serves at the second: whenReady resolves then.
      const marker = join(dir.path, 'started-once');
      const flaky = `const fs = require('node:fs'); if (!fs.existsSync(${JSON.stringify(marker)})) { fs.writeFileSync(${JSON.stringify(marker)}, ''); process.exit(1); } ${READY}`;
      supervisor.start({ name: 'flaky', args: program(flaky), env: process.env, ready: 'message' });
      await supervisor.whenReady('flaky');
      expect(existsSync(marker)).toBe(true);

      supervisor.start({ name: 'misconfigured', args: program(`process.exit(${CONFIG_EXIT_CODE})`), env: process.env, ready: 'message' });
      await fatalSeen;
      expect(fatal).toEqual(['misconfigured']);
    } finally {
      await supervisor.stopAll();
      dir.remove();
    }
  });

  it('says why a service could not be started at all (its binary gone), tries again, and stops', { timeout: 10_000 }, async () => {
    const errors: Record<string, unknown>[] = [];
    let seen!: () => void;
    const twice = new Promise<void>((r) => (seen = r));
    const log = createLogger('test', 'info', {
      write: (s: string) => {
        const line = JSON.parse(s) as Record<string, unknown>;
        if (line.level !== 50) return;
        errors.push(line);
        if (errors.length === 2) seen();
      },
    });
    const supervisor = new Supervisor(log, () => {});
    const dir = tempDir();
    const command = join(dir.path, 'runtime-deleted', 'node');
    try {
      supervisor.start({ name: 'feed', command, args: [], env: process.env, ready: 'message' });
      await twice;
    } finally {
      await supervisor.stopAll();
      dir.remove();
    }
    expect(errors[0]).toMatchObject({ service: 'feed', command, err: expect.stringMatching(/ENOENT/), msg: 'service could not be started: trying again' });
    expect(errors[1]).toMatchObject({ service: 'feed', msg: 'service could not be started: trying again' });
  });

  it('stops in the reverse order of the first start after a service was restarted: C, B, then A', async () => {
    const dir = tempDir();
    const supervisor = new Supervisor(quietLog, () => {});
    const starts = join(dir.path, 'starts');
    const stops = join(dir.path, 'stops');
    // Each logs its start (name and pid) and, at its SIGTERM, its stop: appends, so the files show the order.
    const service = (name: string) =>
      `const fs = require('node:fs'); fs.appendFileSync(${JSON.stringify(starts)}, '${name} ' + process.pid + '\\n');` +
      ` process.on('SIGTERM', () => { fs.appendFileSync(${JSON.stringify(stops)}, '${name}\\n'); process.exit(0); }); ${READY}`;
    const lines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n') : []);
    try {
      for (const name of ['A', 'B', 'C']) {
        supervisor.start({ name, args: program(service(name)), env: process.env, ready: 'message' });
        await supervisor.whenReady(name);
      }
      const a = Number(lines(starts).find((l) => l.startsWith('A '))!.split(' ')[1]);
      process.kill(a, 'SIGKILL');
            // Its SIGTERM handler is set in the same tick as its start line.
      await until(() => lines(starts).filter((l) => l.startsWith('A ')).length === 2, 'A to be restarted');
    } finally {
      await supervisor.stopAll();
    }
    // Before, A (back in the running Map last) was stopped first: A, C, B.
    expect(lines(stops)).toEqual(['C', 'B', 'A']);
    dir.remove();
  });
});
