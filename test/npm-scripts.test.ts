import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../src/config/config.js';
import { tempDir } from './helpers/system.js';

const dirs: ReturnType<typeof tempDir>[] = [];
afterAll(() => dirs.forEach((d) => d.remove()));

const npm = (args: string[], cwd = PROJECT_ROOT) => execFileSync('npm', args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_update_notifier: 'false' } });

/** The compiled files of an unchanged tree are not written again: what a recompile costs is CPU, what it leaves is new mtimes. */
describe('no rebuild tax', () => {
  it('a tool script on an unchanged tree recompiles nothing and still runs the tool', () => {
    npm(['run', 'build', '--silent']);
    const outputs = ['dist/src/cli/main.js', 'dist/src/launcher/main.js', 'dist/proto/ndfex.js'].map((f) => join(PROJECT_ROOT, f));
    const before = outputs.map((f) => statSync(f).mtimeMs);
    expect(npm(['run', 'etf', '--silent', '--', '--help'])).toContain('usage: ndfex-etf <command>');
    expect(outputs.map((f) => statSync(f).mtimeMs)).toEqual(before);
  }, 300_000); // The first build compiles whatever changed since the last one.

  it('the ndfex-etf bin builds dist/ itself in a tree that was never built (after npm ci)', () => {
    const bin = JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8')).bin['ndfex-etf'] as string;
    // A copy of the sources with the installed node_modules, and no dist/: what `npm ci` leaves.
    const d = tempDir('etf-fresh-tree-');
    dirs.push(d);
    for (const f of ['package.json', 'tsconfig.json', 'src', 'proto', 'bin']) cpSync(join(PROJECT_ROOT, f), join(d.path, f), { recursive: true });
    symlinkSync(join(PROJECT_ROOT, 'node_modules'), join(d.path, 'node_modules'));
    expect(existsSync(join(d.path, 'dist'))).toBe(false);
    const out = execFileSync(join(d.path, bin), ['--help'], { cwd: d.path, encoding: 'utf8' });
    expect(out).toContain('usage: ndfex-etf <command>');
    expect(existsSync(join(d.path, 'dist/src/cli/main.js'))).toBe(true);
  }, 300_000);
});
